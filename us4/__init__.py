"""us4: raw ultrasound videos -> versioned, verifiable dataset releases, on the Hugging Face Hub, benchmarked with USCL."""
from __future__ import annotations

__version__ = "0.1.0"
