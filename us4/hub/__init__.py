"""Distribution: publish a release (Hub API or a local git repository), download and
verify it, and serve release repositories over the Hub's HTTP API (olah).

Everything here reads finished release folders through `us4.release`; the network is
touched only through `huggingface_hub` (publish, download) or by the mirror server.
"""
from __future__ import annotations
