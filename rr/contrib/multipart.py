"""``rr.contrib.multipart`` is ``rr.multipart``: the parser lives in the core, which ``Request`` uses; this
name stays for applications that imported it from contrib."""

from rr.multipart import (  # noqa: F401 - re-exported
    MAX_FIELD_SIZE,
    MAX_PART_HEADER_SIZE,
    MAX_PARTS,
    MAX_TOTAL_SIZE,
    SPOOL_THRESHOLD,
    Done,
    FormData,
    MultipartError,
    MultipartParser,
    PartData,
    PartEnd,
    PartStart,
    UploadedFile,
    parse_boundary,
    parse_form,
    safe_filename,
)
