"""DICOM ultrasound clips: what a file declares, and the pixels of the wanted frames.

A clip is one multi-frame file (a cine loop), one single-frame file, or the
single-frame files of one series (ordered by the caller; see `find_dicom`). Headers
are read with pydicom up to the pixel data and no further (a deflated file, being one
zlib stream, is inflated whole, still without decoding pixels); the pixel data element is
then checked by walking its item headers (never its bytes) against Rows, Columns and
Number of Frames, so a truncated stream or a wrong frame count is a clear error before
anything is decoded. Decoding goes frame by frame through pydicom's decoder with one
plugin pinned per transfer syntax (`SYNTAXES`), so the same file gives the same pixels
whichever other plugins are installed, and only the wanted frames are decoded.

Pixels, always uint8, by integer rules:
- MONOCHROME2 with 8 bits stored in 8: as stored. Deeper (or shallower) grey: through
  the first VOI window (Window Center/Width, after Rescale Slope/Intercept; LINEAR or
  LINEAR_EXACT, other functions read as LINEAR) when there is one, else the Bits
  Stored range (`pixels.range_to_8bit`): exact thresholds, no floating point.
  MONOCHROME1 is inverted afterwards (255 - v). Grey frames carry `grey` only.
- RGB: as stored (deeper samples by the Bits Stored range). YBR_FULL / YBR_FULL_422:
  integer BT.601 full range (`pixels.ycbcr_to_rgb`); 4:2:2 chroma is upsampled by the
  decoder (pydicom repeats it for native data, libjpeg interpolates for JPEG). YBR_RCT /
  YBR_ICT: the JPEG 2000 decoder returns RGB. PALETTE COLOR: the palette applied to
  every possible index once; 16-bit entries keep their high byte (a palette declared
  16-bit whose entries all fit in 8 bits is read as 8-bit, a common writer slip).
  Colour frames carry `rgb` and `grey = to_grey(rgb)`, as decode.py does for RGB video.

De-identification starts here: `ClipInfo.attributes` holds only the attributes of
`DICOM_ALLOWED`, and only values that cannot carry free text (numbers, standard UIDs,
defined terms). Error reasons never quote a header value; they name standard UIDs by
their standard names only.

One module per job: `policy` (the allow-list and which values are safe), `header` (reading
and checking headers, what a clip declares), `pixels` (decoding the wanted frames) and
`series` (finding the clips of a folder).
"""
from __future__ import annotations

from .header import DICOM_SUFFIXES, SYNTAXES, Syntax, is_dicom_file, probe_dicom
from .pixels import decode_dicom
from .policy import DICOM_ALLOWED, AllowedAttribute, allowed_table, syntax_name
from .series import find_dicom

__all__ = ["DICOM_ALLOWED", "DICOM_SUFFIXES", "SYNTAXES", "AllowedAttribute", "Syntax", "allowed_table",
           "decode_dicom", "find_dicom", "is_dicom_file", "probe_dicom", "syntax_name"]
