"""ResNet-18 with the USCL projection and classifier, in plain PyTorch.

Parameter names follow the reference checkpoint (`ResNetSimCLR` of the USCL code):
`features.*` is torchvision's ResNet-18 without its `fc` as an `nn.Sequential`
(conv1=0, bn1=1, relu=2, maxpool=3, layer1..4=4..7, avgpool=8), then `l1`, `l2`
(projection 512-512-256) and `fc` (classifier on the projection). A reference
`best_model.pth` state dict therefore loads key for key.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FEATURE_DIM = 512
PROJECTION_DIM = 256
#: index of layer4 inside `features`; the fine-tuning protocol trains only its last block
LAYER4 = 7


class BasicBlock(nn.Module):
    """torchvision's BasicBlock, with the same attribute names (conv1, bn1, conv2, bn2, downsample)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


def _layer(in_ch: int, out_ch: int, stride: int) -> nn.Sequential:
    return nn.Sequential(BasicBlock(in_ch, out_ch, stride), BasicBlock(out_ch, out_ch, 1))


def resnet18_features(in_channels: int = 3) -> nn.Sequential:
    """ResNet-18 trunk up to global average pooling, initialised as torchvision does."""
    features = nn.Sequential(
        nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2, 1),
        _layer(64, 64, 1),
        _layer(64, 128, 2),
        _layer(128, 256, 2),
        _layer(256, 512, 2),
        nn.AdaptiveAvgPool2d(1),
    )
    for m in features.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return features


class USCLModel(nn.Module):
    """ResNet-18 trunk + projection Linear(512,512)-ReLU-Linear(512,256) + classifier on the projection.

    The trunk keeps the reference's 3 input channels so that its checkpoints (and
    torchvision ImageNet weights) load unchanged; a grey (1-channel) batch is
    broadcast to 3 channels, which is what the reference's `convert('RGB')` does.
    """

    def __init__(self, num_classes: int = 12):
        super().__init__()
        self.channels_last = False  # set by `use_channels_last`; inputs then follow the weights' layout
        self.features = resnet18_features(3)
        self.l1 = nn.Linear(FEATURE_DIM, FEATURE_DIM)
        self.l2 = nn.Linear(FEATURE_DIM, PROJECTION_DIM)
        self.fc = nn.Linear(PROJECTION_DIM, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled 512-d features of a normalised N x C x H x W batch (C = 1 or 3)."""
        return self.features(as_input(x, self.channels_last)).flatten(1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(features h, projection z, class logits c), as the reference's forward."""
        h = self.embed(x)
        z = self.l2(F.relu(self.l1(h)))
        return h, z, self.fc(z)

    def use_channels_last(self) -> USCLModel:
        """NHWC weights and inputs: the fast layout for convolutions on recent GPUs."""
        self.channels_last = True
        return self.to(memory_format=torch.channels_last)



def as_input(x: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """A grey (1-channel) batch broadcast to the trunk's 3 channels, in the trunk's memory layout."""
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x
