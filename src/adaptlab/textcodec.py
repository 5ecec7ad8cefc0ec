"""The text encoding a byte-order mark declares: what config files and data files are decoded with when no
encoding is given (UTF-16 is what Windows PowerShell's ``>`` writes). Kept apart from the readers so that reading a
config imports no data library."""

from __future__ import annotations

import codecs

#: Longest first: the UTF-32 LE mark begins with the UTF-16 LE one.
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF16_LE, "utf-16"),
         (codecs.BOM_UTF16_BE, "utf-16"))


def bom_codec(raw: bytes) -> str | None:
    """"utf-32" or "utf-16" (whose decoders read the mark and strip it) when ``raw`` starts with their mark, else
    None (a UTF-8 mark is left to the utf-8-sig codec)."""
    return next((codec for bom, codec in _BOMS if raw.startswith(bom)), None)
