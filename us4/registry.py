"""The single source of truth for sources, classes, licences and expected counts.

The CLI listing, the build (labels), the card and the checks all read this module;
nothing else in the project spells a class prefix or a licence. It imports only
`us4.errors`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import Us4Error

#: Names of the joint 12-way head of the USCL reference code (index -> name).
US4_HEAD: tuple[str, ...] = (
    "clust_rb1", "clust_rb2", "clust_rb3", "clust_rb4", "clust_rb5",
    "fibrosis_f0", "fibrosis_f1", "fibrosis_f2", "fibrosis_f3", "fibrosis_f4",
    "lung_regular", "lung_abnormal",
)


@dataclass(frozen=True)
class ClassDef:
    """One class of a source: how a clip's file name announces it, and where it maps."""

    name: str
    prefixes: tuple[str, ...]  # file-name prefixes, matched case-insensitively
    us4_head: int | None = None  # index in US4_HEAD, None outside US-4
    sheet_labels: tuple[str, ...] = ()  # values of a metadata sheet's label column


@dataclass(frozen=True)
class Citation:
    key: str
    bibtex: str


@dataclass(frozen=True)
class Source:
    name: str
    corpus: str  # "US-4", "POCUS", "COVID-BLUES"
    organ: str
    probe: str  # default probe; POCUS reads it per clip from the folder name
    classes: tuple[ClassDef, ...]
    licence: str
    citation: str  # key into CITATIONS
    description: str
    expected_videos: int | None = None  # as published by the paper
    expected_images: int | None = None
    url: str | None = None
    public: bool = True
    # the form its holders have it in: video (containers), dicom (cine loops), image_sequence (PNG folders)
    input: str = "video"
    # POCUS: the metadata sheet beside the clips; its label column wins over the file name.
    sheet: str | None = None
    sheet_key: str | None = None
    sheet_label: str | None = None
    sheet_licence: str | None = None
    sheet_shipped: str | None = None  # the sheet's column saying whether the public repository ships the clip
    probe_folders: tuple[str, ...] = field(default=())  # sub-folders that name the probe

    def class_of_name(self, file_name: str) -> ClassDef | None:
        """The class announced by a clip's file-name prefix, or None."""
        low = file_name.lower()
        # longest prefix first, so that e.g. "Pneu" is not read as "P..."
        candidates = sorted(
            ((p.lower(), c) for c in self.classes for p in c.prefixes), key=lambda t: -len(t[0])
        )
        for prefix, cls in candidates:
            if low.startswith(prefix):
                return cls
        return None

    def class_of_sheet(self, value: str) -> ClassDef | None:
        low = value.strip().lower()
        for cls in self.classes:
            if low in (v.lower() for v in cls.sheet_labels):
                return cls
        return None

    def class_named(self, name: str) -> ClassDef:
        for cls in self.classes:
            if cls.name == name:
                return cls
        raise KeyError(f"source {self.name!r} has no class {name!r}")

    def label_id(self, cls: ClassDef) -> int:
        return self.classes.index(cls)


CITATIONS: dict[str, Citation] = {
    "uscl": Citation(
        "chen2021uscl",
        """@inproceedings{chen2021uscl,
  title     = {{USCL}: Pretraining Deep Ultrasound Image Diagnosis Model through Video Contrastive Representation Learning},
  author    = {Chen, Yixiong and Zhang, Chunhui and Liu, Li and Feng, Cheng and Dong, Changfeng and Luo, Yongfang and Wan, Xiang},
  booktitle = {Medical Image Computing and Computer Assisted Intervention (MICCAI)},
  pages     = {627--637},
  year      = {2021},
  note      = {arXiv:2011.13066}
}""",
    ),
    "pocus": Citation(
        "born2021pocus",
        """@article{born2021pocus,
  title   = {Accelerating Detection of Lung Pathologies with Explainable Ultrasound Image Analysis},
  author  = {Born, Jannis and Wiedemann, Nina and others},
  journal = {Applied Sciences},
  volume  = {11},
  number  = {2},
  pages   = {672},
  year    = {2021},
  doi     = {10.3390/app11020672}
}""",
    ),
    "clust": Citation(
        "deluca2015clust",
        """@article{deluca2015clust,
  title   = {The 2014 Liver Ultrasound Tracking Benchmark},
  author  = {De Luca, Valeria and others},
  journal = {Physics in Medicine and Biology},
  volume  = {60},
  number  = {14},
  pages   = {5571--5599},
  year    = {2015},
  doi     = {10.1088/0031-9155/60/14/5571}
}""",
    ),
    "blues": Citation(
        "wiedemann2025covid",
        """@article{wiedemann2025covid,
  title   = {{COVID-BLUeS} - A Prospective Study on the Value of {AI} in Lung Ultrasound Analysis},
  author  = {Wiedemann, Nina and Boer, Dianne de Korte-de and Richter, Matthias and van de Weijer, Sjors and Buhre, Charlotte and Eggert, Franz A. M. and Aarnoudse, Sophie and Grevendonk, Lotte and Röber, Steffen and Remie, Carlijn M.E. and Buhre, Wolfgang and Henry, Ronald and Born, Jannis},
  journal = {IEEE Journal of Biomedical and Health Informatics},
  volume  = {29},
  number  = {9},
  pages   = {6301--6310},
  year    = {2025},
  doi     = {10.1109/JBHI.2025.3543686}
}""",
    ),
}

_LUNG_REGULAR, _LUNG_ABNORMAL = 10, 11

SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source(
            name="butterfly",
            corpus="US-4",
            organ="lung",
            probe="convex",
            classes=(
                ClassDef("regular", ("Reg",), _LUNG_REGULAR),
                ClassDef("covid", ("Cov",), _LUNG_ABNORMAL),
            ),
            licence="Butterfly Network COVID-19 gallery terms (research use; redistribution of frames not granted)",
            citation="uscl",
            description="Butterfly Network COVID-19 lung ultrasound gallery clips",
            expected_videos=22,
            expected_images=1533,
            url="https://www.butterflynetwork.com/covid-19",
        ),
        Source(
            name="clust",
            corpus="US-4",
            organ="liver",
            probe="convex",
            classes=tuple(
                ClassDef(f"rb{i}", (f"Rb{i}",), i - 1) for i in range(1, 6)
            ),
            licence="CLUST challenge data licence (research use, cite the challenge)",
            citation="clust",
            description="MICCAI CLUST 2D liver ultrasound tracking sequences",
            expected_videos=63,
            expected_images=3150,
            url="https://clust.ethz.ch",
            input="image_sequence",
        ),
        Source(
            name="liver_fibrosis",
            corpus="US-4",
            organ="liver",
            probe="convex",
            classes=tuple(
                ClassDef(f"f{i}", (f"F{i}_",), 5 + i) for i in range(0, 5)
            ),
            licence="private hospital collection (USCL authors); not redistributable",
            citation="uscl",
            description="Liver fibrosis clips graded F0-F4, collected by the USCL authors' hospitals",
            expected_videos=296,
            expected_images=11714,
            public=False,
            input="dicom",
        ),
        Source(
            name="covid19_lusms",
            corpus="US-4",
            organ="lung",
            probe="convex",
            classes=(
                ClassDef("a_lines", ("Ali",), _LUNG_REGULAR),
                ClassDef("b_lines", ("Bli",), _LUNG_ABNORMAL),
                ClassDef("pleural", ("Ple",), _LUNG_ABNORMAL),
                ClassDef("other", ("Oth",), _LUNG_ABNORMAL),
            ),
            licence="private hospital collection (USCL authors); not redistributable",
            citation="uscl",
            description="COVID-19 lung ultrasound clips (A-lines, B-lines, pleural lesions, other)",
            expected_videos=670,
            # the paper gives ~23,231 images in all; this source holds the rest
            expected_images=23231 - 1533 - 3150 - 11714,
            public=False,
            input="dicom",
        ),
        Source(
            name="pocus",
            corpus="POCUS",
            organ="lung",
            probe="convex",
            classes=(
                ClassDef("covid", ("Cov",), sheet_labels=("COVID-19",)),
                ClassDef("pneumonia", ("Pneu",), sheet_labels=("Bacterial pneumonia",)),
                ClassDef("regular", ("Reg",), sheet_labels=("regular", "Regular")),
                ClassDef("viral", ("Vir",), sheet_labels=("Viral pneumonia",)),
            ),
            licence="per clip (metadata sheet column License: CC BY 4.0, CC BY-NC 4.0, CC BY-NC-SA, ...)",
            citation="pocus",
            description="POCUS public lung ultrasound dataset (jannisborn/covid19_ultrasound, data/)",
            # USCL's evaluation set: 2116 images (655 COVID, 349 pneumonia, 1112 regular)
            expected_images=2116,
            url="https://github.com/jannisborn/covid19_ultrasound",
            sheet="dataset_metadata.csv",
            sheet_key="Filename",
            sheet_label="Label",
            sheet_licence="License",
            sheet_shipped="InThisRepo",
            probe_folders=("convex", "linear"),
        ),
        Source(
            name="blues",
            corpus="COVID-BLUES",
            organ="lung",
            probe="convex",
            # from the patient's PCR test (clinical_variables.csv, cov_test: 1 positive, 0 negative)
            classes=(
                ClassDef("covid", (), sheet_labels=("1",)),
                ClassDef("negative", (), sheet_labels=("0",)),
            ),
            licence="CC BY-NC-ND 4.0",
            citation="blues",
            description="COVID-BLUES: lung ultrasound videos at the six BLUE points of 63 COVID-19 suspects "
                        "(Maastricht UMC+, 2021; Philips Lumify, convex probe), labelled by the patient's PCR test",
            expected_videos=362,
            expected_images=31746,  # every frame of every video, as the dataset's README counts them
            url="https://github.com/NinaWie/COVID-BLUeS-dataset",
        ),
    )
}

US4_SOURCES: tuple[str, ...] = tuple(n for n, s in SOURCES.items() if s.corpus == "US-4")


# --- licence terms -----------------------------------------------------------------

#: The terms of a Creative Commons licence beyond attribution: no commercial use, no
#: derivatives (frames cut from a clip are one), share alike.
NC, ND, SA = "NC", "ND", "SA"
_TERM_WORDS = {"nc": NC, "noncommercial": NC, "nd": ND, "noderivatives": ND, "noderivs": ND,
               "sa": SA, "sharealike": SA}
_BY_WORDS = {"by", "attribution"}
_FILLER = {"cc", "creative", "commons", "license", "licence", "international", "unported", "generic"}
_CC0_WORDS = {"universal", "public", "domain", "dedication", "license", "licence"}
_VERSION = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_LONGEST_LICENCE = 200  # characters: the longest spelling of a licence's name is under 80


def licence_terms(text: str) -> frozenset[str] | None:
    """The terms (NC, ND, SA) of a Creative Commons licence, however its name is spelled:
    "CC BY-NC-ND 4.0", "CC-BY-NC-ND", "by-nc-nd", "CC BY-NC -SA 4.0" (as POCUS's sheet has it),
    "Attribution-NonCommercial 4.0 International"; CC0 and CC BY have none (an empty set).

    None: the terms are unknown, because the text is no such name (free text, a licence of its
    own, "None", nothing): whoever shares data under it must read it. Every word must belong to
    a licence's name, so a sentence that merely mentions one ("not CC BY") stays unknown.
    """
    if not isinstance(text, str) or len(text) > _LONGEST_LICENCE:
        return None
    words = re.findall(r"[a-z]+|[0-9]+(?:\.[0-9]+)*", text.lower())
    if words[:2] in (["cc", "0"], ["cc", "zero"]):
        rest = words[2:]
        return frozenset() if all(w in _CC0_WORDS or _VERSION.match(w) for w in rest) else None
    # "BY" is a licence only beside "CC" or a term: "by" alone is an English word
    if not _BY_WORDS & set(words) or not {"cc", "creative", "attribution", *_TERM_WORDS} & set(words):
        return None
    if not all(w in _TERM_WORDS or w in _BY_WORDS or w in _FILLER or _VERSION.match(w) for w in words):
        return None
    return frozenset(_TERM_WORDS[w] for w in words if w in _TERM_WORDS)


class UnknownSourceError(Us4Error, KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; this one reads as a sentence
        return self.args[0]


def get_source(name: str) -> Source:
    try:
        return SOURCES[name]
    except KeyError:
        raise UnknownSourceError(
            f"unknown source {name!r}; known sources: {', '.join(SOURCES)}"
        ) from None
