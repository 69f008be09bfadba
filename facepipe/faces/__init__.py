"""Pure face code: image bytes in, face records out. No Dagster, no stores."""

from facepipe.faces.extract import ExtractSettings, extract_faces
from facepipe.faces.records import Face, ImageRecord, face_id

__all__ = ["ExtractSettings", "Face", "ImageRecord", "extract_faces", "face_id"]
