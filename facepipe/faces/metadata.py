"""What a photo's EXIF says about when, with what and where it was taken, for analytics.

Read from the bytes facepipe already holds; every field is optional and a malformed value gives
None, never an error (cameras and editors write all kinds of things into EXIF).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from datetime import datetime

from PIL import Image

EXIF_IFD, GPS_IFD = 0x8769, 0x8825
MAKE, MODEL = 0x010F, 0x0110
DATETIME_ORIGINAL, DATETIME_DIGITIZED = 0x9003, 0x9004
OFFSET_TIME_ORIGINAL, OFFSET_TIME_DIGITIZED = 0x9011, 0x9012
GPS_LAT_REF, GPS_LAT, GPS_LON_REF, GPS_LON = 1, 2, 3, 4

_DATETIME = re.compile(r"\s*(\d{4})[:-](\d{2})[:-](\d{2})[ T](\d{2}):(\d{2}):(\d{2})")
_OFFSET = re.compile(r"\s*([+-])(\d{2}):?(\d{2})\s*$")


@dataclass(frozen=True, slots=True)
class PhotoMetadata:
    taken_at: datetime | None = None  # the camera's wall-clock time (naive): what "per year" means to a person
    taken_at_offset: str | None = None  # its UTC offset, e.g. "+02:00", when the camera recorded one
    camera_make: str | None = None
    camera_model: str | None = None
    gps_lat: float | None = None  # degrees, north positive
    gps_lon: float | None = None  # degrees, east positive
    file_size: int | None = None  # bytes
    mtime: datetime | None = None  # the file's modification time (UTC), set by whoever read the file


def read_metadata(data: bytes) -> PhotoMetadata:
    """The photo's EXIF facts; a photo without EXIF (or one Pillow cannot open) gives only its size."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format == "PNG" and "exif" not in image.info:
                # an eXIf chunk after the pixels is only found by decoding them all: not worth it here
                return PhotoMetadata(file_size=len(data))
            exif = image.getexif()
            sub, gps = exif.get_ifd(EXIF_IFD), exif.get_ifd(GPS_IFD)
    except Exception:  # unreadable photos get an error row from the loader; metadata stays empty
        return PhotoMetadata(file_size=len(data))
    original = sub.get(DATETIME_ORIGINAL)
    offset = sub.get(OFFSET_TIME_ORIGINAL)
    if not original:
        original, offset = sub.get(DATETIME_DIGITIZED), sub.get(OFFSET_TIME_DIGITIZED)
    taken_at = parse_exif_datetime(original)
    return PhotoMetadata(
        taken_at=taken_at,
        taken_at_offset=parse_exif_offset(offset) if taken_at else None,
        camera_make=_text(exif.get(MAKE)),
        camera_model=_text(exif.get(MODEL)),
        gps_lat=_coordinate(gps.get(GPS_LAT), gps.get(GPS_LAT_REF), "S", 90),
        gps_lon=_coordinate(gps.get(GPS_LON), gps.get(GPS_LON_REF), "W", 180),
        file_size=len(data),
    )


def parse_exif_datetime(value: object) -> datetime | None:
    """`YYYY:MM:DD HH:MM:SS`, ignoring what follows (sub-seconds, or garbage such as `.60:04:00`);
    None for anything else, including the all-zero dates some cameras write."""
    if not isinstance(value, str):
        return None
    match = _DATETIME.match(value)
    if not match:
        return None
    try:
        return datetime(*(int(part) for part in match.groups()))
    except ValueError:  # 0000:00:00 00:00:00, month 13, ...
        return None


def parse_exif_offset(value: object) -> str | None:
    """OffsetTimeOriginal as `+HH:MM`, or None when absent or malformed."""
    if not isinstance(value, str):
        return None
    match = _OFFSET.match(value)
    if not match or int(match[2]) > 14 or int(match[3]) > 59:
        return None
    return f"{match[1]}{match[2]}:{match[3]}"


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    value = value.replace("\x00", "").strip()
    return value or None


def _coordinate(dms: object, ref: object, negative: str, limit: float) -> float | None:
    """Degrees from EXIF's (degrees, minutes, seconds) rationals and N/S or E/W reference."""
    try:
        degrees, minutes, seconds = (float(part) for part in dms)  # type: ignore[union-attr]
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    value = degrees + minutes / 60 + seconds / 3600
    if value != value or value > limit:  # NaN (0/0 rationals) or out of range
        return None
    if isinstance(ref, bytes):
        ref = ref.decode("ascii", "replace")
    return round(-value if isinstance(ref, str) and ref.strip().upper() == negative else value, 7)
