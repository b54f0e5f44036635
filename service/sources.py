"""The file an import reads, before a feature of it is checked: what it is (size, format, a zip's entries, a
GeoPackage's layers), its text encoding (a UTF-8 copy of a CSV or GeoJSON file in another one; GDAL recodes a
Shapefile's), how many features it holds, and its CRS. Everything wrong here is a 4xx naming the file or the
option, before anything is written. `service.importer` reads and writes what this module opened."""

from __future__ import annotations

import codecs
import re
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow as pa
import pyogrio

from service.crs import CRS84, Crs, resolve
from service.errors import InvalidData, InvalidParameter, PayloadTooLarge

# Uploads, and UTF-8 copies of files in other encodings, live in temporary directories named so; a service
# that dies during an import leaves them behind, and a later start sweeps them up (service.jobs).
WORK_PREFIX = "geotwin-import-"
MAX_ZIP_ENTRIES = 1_000
MAX_ZIP_RATIO = 200
FORMATS = {".geojson": "GeoJSON", ".json": "GeoJSON", ".gpkg": "GPKG", ".zip": "ESRI Shapefile", ".csv": "CSV",
           ".fgb": "FlatGeobuf", ".gml": "XPlanGML"}  # XPlanGML is read by service.xplan
# How files begin, for saying what a file is when its name says otherwise: (what it is, the name it needs, if
# it is a format GeoTwin reads). A binary format's file must begin with its own.
SQLITE, FLATGEOBUF, ZIP = b"SQLite format 3\x00", b"fgb\x03", b"PK\x03\x04"
HEADS = ((SQLITE, "a SQLite database (a GeoPackage?)", ".gpkg"),
         (ZIP, "a zip archive", ".zip"), (b"PK\x05\x06", "an empty zip archive", None),
         (FLATGEOBUF, "a FlatGeobuf file", ".fgb"), (b"%PDF", "a PDF document", None),
         (b"\xd0\xcf\x11\xe0", "an Office document of the old kind (an Excel .xls?)", None),
         (b"\x1f\x8b", "a gzip archive", None), (b"Rar!", "a RAR archive", None),
         (b"7z\xbc\xaf", "a 7-Zip archive", None), (b"\x89PNG", "a PNG image", None),
         (b"\xff\xd8\xff", "a JPEG image", None), (b"II*\x00", "a TIFF image", None),
         (b"MM\x00*", "a TIFF image", None))
BINARY_HEADS = {"GPKG": SQLITE, "FlatGeobuf": FLATGEOBUF, "ESRI Shapefile": b"PK"}  # PK: an empty zip too
TEXT_BEGINS = {"GeoJSON": "{", "XPlanGML": "<"}
EXPECTED = {"GPKG": "a GeoPackage", "FlatGeobuf": "a FlatGeobuf file", "ESRI Shapefile": "a zip archive",
            "GeoJSON": "GeoJSON", "XPlanGML": "XPlanGML", "CSV": "CSV"}
CSV_OPTIONS = {"GEOM_POSSIBLE_NAMES": "wkt,WKT,geometry,geom", "KEEP_GEOM_COLUMNS": "NO", "AUTODETECT_TYPE": "YES",
               "X_POSSIBLE_NAMES": "x,X,lon,lng,longitude,rechtswert,easting",
               "Y_POSSIBLE_NAMES": "y,Y,lat,latitude,hochwert,northing"}


@dataclass
class ImportOptions:
    mode: str = "replace"  # or "append"
    crs: str | None = None  # the source CRS when the file does not say (or says it wrongly)
    mapping: dict[str, str] = field(default_factory=dict)  # layer-type property -> source field
    layer: str | None = None  # for files with several layers
    id_field: str | None = None  # source field holding feature ids (default: the file's own ids)
    encoding: str | None = None  # text encoding when the file does not say (CSV and GeoJSON that are not UTF-8,
    # a Shapefile without .cpg)
    max_bytes: int = 2 << 30


# ---------------------------------------------------------------- checking the file before GDAL reads it

def text_encoding(name: str | None) -> str | None:
    """The codec `encoding` names, as Python calls it; None for UTF-8, which every reader takes as it is. An
    unknown name, or a codec that is not for text (base64, zlib), is a 400 naming `encoding`."""
    if not name or not name.strip():
        return None
    try:
        b"\0\0\0\0".decode(name.strip())
        codec = codecs.lookup(name.strip())
    except UnicodeError:  # a codec, but not one for files (undefined, punycode)
        raise InvalidParameter(f"{name[:40]!r} is not an encoding files are written in: give one such as cp1252",
                               parameter="encoding") from None
    except (LookupError, ValueError):  # ValueError: a NUL in the name
        raise InvalidParameter(f"unknown text encoding {name[:40]!r}: give one such as cp1252 (Excel and "
                               "Windows), iso-8859-1 or utf-16", parameter="encoding") from None
    return None if codec.name == "utf-8" else codec.name


def check_size(path: Path, max_bytes: int) -> None:
    size = path.stat().st_size
    if size > max_bytes:
        raise PayloadTooLarge(f"the file has {size:,} bytes; at most {max_bytes:,} are accepted")
    if size == 0:
        raise InvalidData("the file is empty", parameter="file")


def gdal_path(path: Path, options: ImportOptions) -> tuple[str, str, Path]:
    """(what GDAL opens, driver, the file it reads) after the checks every upload gets. The file read is a
    UTF-8 copy, in a directory of its own, when a CSV or GeoJSON file comes in another encoding; the caller
    removes it (`remove_copy`)."""
    check_size(path, options.max_bytes)
    driver = FORMATS.get(path.suffix.lower())
    if driver is None:
        raise InvalidParameter(f"unknown file type {path.suffix!r}: send .geojson, .gpkg, .fgb, .zip (a zipped "
                               "Shapefile), .csv or .gml (XPlanGML)", parameter="file")
    encoding = text_encoding(options.encoding)
    if driver in ("GeoJSON", "CSV"):
        nul = _NulFinder(driver == "GeoJSON")
        original = path
        if encoding is None:
            _check_utf8(path, nul)
        else:
            path = _utf8_copy(path, encoding, nul)
        if nul.found is not None:
            try:
                _refuse_nul(path, driver, nul)
            finally:
                remove_copy(original, path)
    if driver == "ESRI Shapefile":
        return f"/vsizip/{path}/{zip_content(path, options.max_bytes, options.layer)[1]}", driver, path
    return str(path), driver, path


def check_head(path: Path, encoding: str | None = None) -> None:
    """Refuse a file whose first bytes say it is not what its name says: a binary format's own signature, text
    that begins as GeoJSON or XML does, no binary file for CSV. The error names what the file is instead, and
    the name it needs if GeoTwin reads that too (a GeoPackage named .zip). Reads 512 bytes, so an upload is
    refused at once, not by an import job that fails later."""
    with path.open("rb") as handle:
        head = handle.read(512)
    _check_head(head, path.suffix.lower(), path.stat().st_size, encoding)


def _check_head(head: bytes, suffix: str, size: int, encoding: str | None, entry: str | None = None) -> None:
    """`check_head` on a file's first bytes and its size; `entry` names the file in a zip that holds it."""
    if not head:
        return  # an empty file is refused by its size
    driver = FORMATS.get(suffix)
    if driver is None:
        return  # refused by its name
    what, needs, text = _what_it_is(head, encoding)
    if driver in BINARY_HEADS:
        fits = head.startswith(BINARY_HEADS[driver])
        if fits and driver == "GPKG":
            _check_sqlite_size(head, size, entry)
    elif driver in TEXT_BEGINS:
        fits = text is not None and (not text or text.startswith(TEXT_BEGINS[driver]))
    else:  # CSV, in whatever encoding: only a known binary format is refused
        fits = text is not None or what.startswith("binary")
    if fits:
        return
    hint = f"; name it {needs}" if needs and needs != suffix else ""
    if driver == "GeoJSON" and text and text[0] == "[":
        what, hint = "a JSON array", '; GeoJSON is an object: {"type": "FeatureCollection", "features": [...]}'
    if driver == "CSV" and "Excel" in what:
        hint = "; save it from Excel as CSV UTF-8 first"
    called = f"the file {entry!r} in the zip" if entry else "the file"
    raise InvalidData(f"{called} is named {suffix}, but it is {what}, not {EXPECTED[driver]}{hint}",
                      parameter="file")


def _check_sqlite_size(head: bytes, size: int, entry: str | None) -> None:
    """Refuse a GeoPackage shorter than its SQLite header says it is: cut off in a copy or an upload. The
    header's page count holds only while its change counter and "version valid for" agree (SQLite's file
    format, section 1.3); otherwise nothing is said here and GDAL judges the file."""
    if len(head) < 100:
        return
    page_size = int.from_bytes(head[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(head[28:32], "big")
    expected = page_size * pages
    if pages and head[24:28] == head[92:96] and size < expected:
        called = f"the GeoPackage {entry!r} in the zip" if entry else "the GeoPackage"
        raise InvalidData(f"{called} is incomplete: it has {size:,} bytes of the {expected:,} its header "
                          f"gives; {ASK_WHOLE}", parameter="file")


def check_upload(path: Path, options: ImportOptions) -> None:
    """What can be said of an upload at once, from its first bytes, a zip's directory (`check_head`, the
    checks every zip gets, the Shapefile's companions) and a GeoPackage's table of contents (damaged, which
    layer), so that it is refused with the request, not by an import job that fails. A file zipped to be mailed
    gets the same checks, read from the zip. The job makes them again, and then those of the content."""
    check_head(path, options.encoding)
    suffix = path.suffix.lower()
    if suffix == ".zip":
        kind, entry = zip_content(path, options.max_bytes, options.layer)
        if kind != "shapefile":
            check_packed(path, entry, options)
    if suffix == ".gpkg":  # opening one reads its table of contents only: a damaged one, its layers
        choose_layer(str(path), "GPKG", options)


def check_packed(path: Path, entry: str, options: ImportOptions) -> None:
    """`check_upload`'s checks of the file a zip holds (a GeoPackage zipped to be mailed, an XPlanArchiv's
    plan), read from the zip, with errors that name it."""
    with zipfile.ZipFile(path) as archive, _unpacking(entry), archive.open(entry) as handle:
        head, size = handle.read(512), archive.getinfo(entry).file_size
    _check_head(head, PurePosixPath(entry).suffix.lower(), size, options.encoding, entry)
    if entry.lower().endswith(".gpkg"):
        choose_layer(f"/vsizip/{path}/{entry}", "GPKG", options)


def _what_it_is(head: bytes, encoding: str | None) -> tuple[str, str | None, str | None]:
    """(what a file is by its first bytes, the name ending GeoTwin reads it under or None, its text after
    any byte order mark and white space, or None when it is binary)."""
    for magic, what, suffix in HEADS:
        if head.startswith(magic):
            if suffix == ".zip" and (b"[Content_Types].xml" in head or b"xl/" in head):
                return "an Office document (an Excel workbook, .xlsx?)", None, None
            return what, suffix, None
    codec = _head_codec(head, encoding)
    if b"\x00" in head and not codec.startswith("utf-16") and not codec.startswith("utf-32"):
        return "binary content of no format GeoTwin reads", None, None
    # A byte order mark, white space and the record separator that begins each feature of a GeoJSON text
    # sequence (RFC 8142), which GDAL reads too.
    text = head.decode(codec, errors="replace").lstrip("\ufeff\x1e \t\r\n")
    if text[:1] in ("{", "["):
        return "JSON", ".geojson", text
    if text[:1] == "<":
        return "XML or HTML", None, text
    return "text", None, text


def _head_codec(head: bytes, encoding: str | None) -> str:
    """The codec to read a text file's first bytes with: the one given (an unknown one is a 400 naming
    `encoding`), else UTF-16 after its byte order mark (the UTF-8 check later asks for the encoding), else
    UTF-8."""
    given = text_encoding(encoding)
    if given:
        return given
    return "utf-16" if head.startswith((b"\xff\xfe", b"\xfe\xff")) else "utf-8"


def remove_copy(original: Path, read: Path) -> None:
    """Remove the UTF-8 copy `gdal_path` made, if it made one."""
    if read != original:
        shutil.rmtree(read.parent, ignore_errors=True)


def _utf8_copy(path: Path, encoding: str, nul: _NulFinder) -> Path:
    """`path`, a text file in `encoding`, copied as UTF-8 (streamed: memory stays flat)."""
    directory = Path(tempfile.mkdtemp(prefix=WORK_PREFIX))
    target = directory / ("utf8" + path.suffix.lower())
    decoder = codecs.getincrementaldecoder(encoding)()
    offset = 0
    try:
        with path.open("rb") as source, target.open("wb") as out:
            while True:
                chunk = source.read(1 << 20)
                try:
                    text = decoder.decode(chunk, final=not chunk).encode()
                except UnicodeError as exc:
                    at = offset + getattr(exc, "start", 0) - max(len(getattr(exc, "object", chunk)) - len(chunk), 0)
                    raise InvalidData(f"the file is not {encoding}: it cannot be read as that at offset {at:,} "
                                      "(is the encoding right?)", parameter="encoding") from None
                out.write(text)
                nul.feed(text)
                if not chunk:
                    return target
                offset += len(chunk)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise


def _check_utf8(path: Path, nul: _NulFinder) -> None:
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            nul.feed(chunk)
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                raise InvalidData(f"the file is not UTF-8: invalid byte at offset {offset + exc.start:,} "
                                  "(save it as UTF-8, or give its encoding: Excel saves CSV as cp1252)",
                                  parameter="file") from None
            offset += len(chunk)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise InvalidData("the file ends in the middle of a UTF-8 character (truncated?)",
                              parameter="file") from None


# U+0000 in a text: GDAL cuts the text there without a word, and PostgreSQL cannot store it (an edit holding it
# is refused). A GeoJSON file writes it as the escape \u0000 (a backslash before it that is escaped itself does
# not count); a raw NUL byte is no text in either format.
_NUL_TAIL = 64  # bytes of the previous chunk kept, for an escape that a chunk boundary splits


class _NulFinder:
    """Where a streamed UTF-8 file first holds U+0000: its offset and line (1-based)."""

    def __init__(self, json_text: bool) -> None:
        self.json_text = json_text
        self.found: tuple[int, int] | None = None
        self._tail = b""
        self._offset = 0  # of the tail's first byte
        self._lines = 0  # newlines before the tail

    def feed(self, chunk: bytes) -> None:
        if self.found is not None or not chunk:
            return
        data = self._tail + chunk
        at = data.find(b"\x00")
        if self.json_text:
            escape = _nul_escape(data)
            if escape >= 0:
                at = escape if at < 0 else min(at, escape)
        if at >= 0:
            self.found = (self._offset + at, self._lines + data.count(b"\n", 0, at) + 1)
            return
        keep = data[-_NUL_TAIL:]
        self._lines += data.count(b"\n", 0, len(data) - len(keep))
        self._offset += len(data) - len(keep)
        self._tail = keep


def _nul_escape(data: bytes) -> int:
    """Where `data` first holds the JSON escape \\u0000 that is not an escaped backslash followed by "u0000";
    -1 if nowhere. bytes.find, not a regular expression: one tried at every byte took 7 s for 92 MB."""
    at = data.find(b"\\u0000")
    while at >= 0:
        before = at
        while before > 0 and data[before - 1] == 0x5C:  # backslashes in front of this one
            before -= 1
        if (at - before) % 2 == 0:
            return at
        at = data.find(b"\\u0000", at + 1)
    return -1


def _refuse_nul(path: Path, driver: str, nul: _NulFinder) -> None:
    """Refuse a file whose text holds U+0000, naming the feature and property in a GeoJSON file where the
    stream lines up, else the offset and line."""
    offset, line = nul.found or (0, 0)
    why = "text may not hold the character U+0000 (NUL), which the database cannot store (GDAL would cut it there)"
    if driver == "GeoJSON":
        from service.geojsoncheck import text_with_nul

        try:
            where = text_with_nul(path)
        except Exception:  # noqa: BLE001 - a file ijson cannot read: fall back to the offset
            where = None
        if where is not None:
            index, fid, name = where
            raise InvalidData(f"feature {index}{f' ({fid})' if fid else ''}: {name}: {why}", parameter="file",
                              index=index, property=name)
    raise InvalidData(f"line {line:,} (offset {offset:,}): {why}", parameter="file")


def zip_content(path: Path, max_bytes: int, layer: str | None = None) -> tuple[str, str]:
    """What a zip is for an import, from one reading of its directory after the checks every zip gets:
    ("xplan", its XPlanGML file) for an XPlanArchiv (a plan's `xplan.gml` and its attachments: scans, PDFs),
    ("packed", the file) for one GeoPackage, GeoJSON, FlatGeobuf or CSV file zipped to be mailed, else
    ("shapefile", the .shp, with its companions; of several, `layer` names one)."""
    names = _zip_entries(path, max_bytes)
    if not any(n.lower().endswith(".shp") for n in names):
        gmls = [n for n in names if n.lower().endswith(".gml")]
        named = [n for n in gmls if PurePosixPath(n).name.lower() == "xplan.gml"]
        if len(named) == 1 or len(gmls) == 1:
            return "xplan", (named or gmls)[0]
        packed = _packed(names)
        if len(packed) == 1:
            return "packed", packed[0]
    return "shapefile", _shapefile_entry(names, layer)


def extract(path: Path, entry: str, target: Path) -> Path:
    """One entry of a checked zip, written to `target`."""
    with zipfile.ZipFile(path) as archive, _unpacking(entry), archive.open(entry) as source, \
            target.open("wb") as out:
        shutil.copyfileobj(source, out, 1 << 20)
    return target


@contextmanager
def _unpacking(entry: str) -> Iterator[None]:
    """A zip entry that cannot be unpacked, as a 422 naming it: damaged (its CRC-32 is read at its end), or
    packed by a method Python does not read (NotImplementedError)."""
    try:
        yield
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        raise InvalidData(f"the file {entry!r} in the zip cannot be unpacked ({exc}); is the zip complete? Zip "
                          "it again", parameter="file") from None


def _shapefile_entry(entries: list[str], layer: str | None = None) -> str:
    """The .shp among a zip's entries, refusing a zip without one. Of several, `layer` names one by its name
    without `.shp`."""
    shps = [n for n in entries if n.lower().endswith(".shp")]
    if not shps:
        others = _packed(entries)
        but = f", but several files: {', '.join(repr(PurePosixPath(n).name) for n in others[:5])}; send one at " \
              "a time" if len(others) > 1 else ""  # one alone is imported (zip_content)
        raise InvalidData(f"the zip holds no Shapefile (.shp), nor an XPlanGML file (.gml){but}", parameter="file")
    if len(shps) == 1:
        return _with_companions(shps[0], entries)
    names = {PurePosixPath(s).stem: s for s in shps}
    if layer in names:
        return _with_companions(names[layer], entries)
    listed = ", ".join(repr(n) for n in list(names)[:20])
    if layer is not None:
        raise InvalidParameter(f"the zip has no Shapefile {layer[:100]!r}; its Shapefiles: {listed}", parameter="layer")
    raise InvalidParameter(f"the zip holds {len(shps)} Shapefiles ({listed}): give layer", parameter="layer")


def _packed(entries: list[str]) -> list[str]:
    return [n for n in entries if PurePosixPath(n).suffix.lower() in FORMATS
            and PurePosixPath(n).suffix.lower() not in (".zip", ".gml") and not n.endswith("/")]


def _with_companions(shp: str, entries: list[str]) -> str:
    """The .shp, once the zip also holds the two files a Shapefile cannot be read without: the .shx (where each
    shape starts) and the .dbf (the attributes). GDAL would read one without a .dbf as shapes without
    properties, and refuse one without a .shx with advice for its command line."""
    stem = shp[:-4].lower()
    present = {n.lower() for n in entries}
    missing = [ext for ext in (".shx", ".dbf") if stem + ext not in present]
    if missing:
        what = {".shx": ".shx (where each shape starts)", ".dbf": ".dbf (the attributes)"}
        name = PurePosixPath(shp).name
        raise InvalidData(f"the Shapefile {name!r} comes without its {' and '.join(what[m] for m in missing)}: zip "
                          "the .shp together with its .shx, .dbf and .prj (and .cpg)", parameter="file")
    return shp


def _zip_entries(path: Path, max_bytes: int) -> list[str]:
    """The names in a zip, after refusing archives that escape, explode or are too many."""
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise InvalidData("not a zip archive, or a damaged one", parameter="file") from None
    with archive:
        entries = archive.infolist()
        if len(entries) > MAX_ZIP_ENTRIES:
            raise InvalidData(f"the zip holds {len(entries):,} entries; at most {MAX_ZIP_ENTRIES} are read",
                              parameter="file")
        total = 0
        for entry in entries:
            name = entry.filename
            if name.startswith(("/", "\\")) or ".." in Path(name).parts or ":" in name or "\\" in name:
                raise InvalidData(f"the zip entry {name!r} points outside the archive", parameter="file")
            total += entry.file_size
            if entry.compress_size and entry.file_size / entry.compress_size > MAX_ZIP_RATIO:
                raise InvalidData(f"the zip entry {name!r} expands {entry.file_size / entry.compress_size:,.0f}-fold"
                                  " (a zip bomb?)", parameter="file")
        if total > max_bytes:
            raise PayloadTooLarge(f"the zip expands to {total:,} bytes; at most {max_bytes:,} are accepted")
        # Without what macOS adds to a zip it makes: `__MACOSX/…/._sites.shp` beside each file (its Finder data),
        # which would count as a second Shapefile or file.
        return [e.filename for e in entries if not e.filename.startswith("__MACOSX/")
                and not PurePosixPath(e.filename).name.startswith("._")]


# ---------------------------------------------------------------- opening it

def open_options(driver: str, options: ImportOptions) -> dict[str, Any]:
    extra: dict[str, Any] = dict(CSV_OPTIONS) if driver == "CSV" else {}
    encoding = text_encoding(options.encoding)
    if driver == "ESRI Shapefile" and encoding:
        extra["ENCODING"] = encoding  # GDAL's open option: it recodes the DBF's names and text to UTF-8
    return extra


def not_text(driver: str, options: ImportOptions, where: str, index: int | None = None,
              field_name: str | None = None) -> InvalidData:
    """The error for text that is not UTF-8 after reading: the file's encoding is not the one given or
    assumed."""
    if options.encoding:
        message = f"{where}: the text cannot be read as {options.encoding}: give the encoding the file is in"
    else:
        hint = " (a Shapefile without .cpg)" if driver == "ESRI Shapefile" else ""
        message = (f"{where}: the text is not UTF-8, and the file does not say its encoding{hint}: give "
                   "encoding, e.g. cp1252")
    return InvalidData(message, parameter="encoding", index=index, property=field_name)


def undecodable(table: Any) -> tuple[int, str] | None:
    """(row, column) of the first text value in an Arrow batch that is not UTF-8; None when the values are all
    UTF-8 (then the field names are not)."""
    for c in range(table.num_columns):
        try:
            column = table.column(c)
        except UnicodeDecodeError:  # pyarrow reads the field's name with it
            return None
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            binary = pa.large_binary() if pa.types.is_large_string(column.type) else pa.binary()
            for i, value in enumerate(column.view(binary).to_pylist()):
                try:
                    value is None or value.decode()
                except UnicodeDecodeError:
                    try:
                        name = table.schema.field(c).name
                    except UnicodeDecodeError:
                        name = f"column {c + 1}"
                    return i, name
    return None


FORMAT_NAMES = {"GeoJSON": "GeoJSON", "GPKG": "a GeoPackage", "ESRI Shapefile": "a Shapefile", "CSV": "CSV",
                "FlatGeobuf": "FlatGeobuf"}
_QUOTED_PATH = re.compile(r"'(/[^']*)'")
ASK_WHOLE = "was it copied or uploaded whole?"
_SQLITE_FAILED = re.compile(r"sqlite3_\w+\(.*?\) failed: ([^;]+)", re.DOTALL)


def gdal_words(text: str) -> str:
    """GDAL's message without what only helps on GDAL's own command line: the server's temporary paths (their
    file names stay), the SQL it ran on a GeoPackage (SQLite's reason stays) and how to choose a driver."""
    text = text.split("; It might help to specify the correct driver", 1)[0]
    if match := _SQLITE_FAILED.search(text):
        return f"it is damaged or incomplete (SQLite: {match[1].strip()})"
    return _QUOTED_PATH.sub(lambda m: repr(PurePosixPath(m[1]).name), text)[:300]


def unreadable(driver: str, exc: Exception) -> InvalidData:
    """The error for a file GDAL cannot open, in the words of the one who sent it (`gdal_words`)."""
    text = str(exc)
    if "not recognized as being in a supported file format" in text:
        detail = "GDAL does not recognise its content; is it complete, and is it that format?"
    else:
        detail = f"{gdal_words(text)}; {ASK_WHOLE}"
    return InvalidData(f"the file cannot be read as {FORMAT_NAMES.get(driver, driver)}: {detail}", parameter="file")


def choose_layer(source: str, driver: str, options: ImportOptions) -> str | None:
    """The layer to read: the one `layer` names, else the file's only layer with geometries (a GeoPackage from
    QGIS also holds its styles, `layer_styles`, as a table without). A file with several layers of geometries
    needs `layer`; the errors list them."""
    if driver != "GPKG" and options.layer is None:
        return None
    try:
        layers = [(str(name), kind) for name, kind in pyogrio.list_layers(source)]
    except pyogrio.errors.DataSourceError as exc:
        raise unreadable(driver, exc) from None
    spatial = [name for name, kind in layers if kind is not None]
    listed = ", ".join(repr(name) for name in (spatial or [name for name, _ in layers])[:20])
    if options.layer is not None:
        if options.layer not in (name for name, _ in layers):
            raise InvalidParameter(f"the file has no layer {options.layer[:100]!r}; its layers: {listed}",
                                   parameter="layer")
        return options.layer
    if len(spatial) > 1:
        raise InvalidParameter(f"the file holds {len(spatial)} layers with geometries ({listed}): give layer",
                               parameter="layer")
    if not spatial:
        raise InvalidData(f"the file holds no layer with geometries (only {listed or 'nothing'})", parameter="file")
    return spatial[0]


def feature_count(path: Path, source: str, driver: str, options: ImportOptions) -> int:
    """How many features the file holds, for progress. GeoPackage, Shapefile and CSV say so cheaply. GDAL
    parses a whole GeoJSON file to count it (1.1 s for 100,000 sites, on top of the parse that reads it), so
    there the `"Feature"` tokens are counted instead: an estimate, as a property could hold that string; the
    report's total is what was read."""
    if driver == "GeoJSON":
        count, tail = 0, b""
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                count += (tail + chunk).count(b'"Feature"')
                tail = chunk[-8:]
        return count
    try:
        return max(int(pyogrio.read_info(source, layer=options.layer, **open_options(driver, options))
                       .get("features") or 0), 0)
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as exc:
        raise unreadable(driver, exc) from None


def source_crs(meta: dict[str, Any], options: ImportOptions, driver: str) -> Crs:
    name = options.crs or meta.get("crs")
    if not name:
        raise InvalidParameter(f"the {driver} file does not say its coordinate reference system: give crs "
                               "(for example EPSG:25832 or EPSG:25833)", parameter="crs")
    try:
        crs = resolve(name)
    except ValueError as exc:
        raise InvalidParameter(str(exc), parameter="crs") from None
    # Files keep x = easting/longitude whatever EPSG:4326 says about axis order.
    return resolve(CRS84) if crs.srid == 4326 else crs
