"""Session files -> one validated Arrow shard per file, cached: finding, reading, validating and caching them."""

from .cache import CACHE_FORMAT_VERSION, FileShard, build_shard, build_shards, parse_session_file
from .files import expand_data_files, resolve_data_files
from .records import REJECTED_RECORDS_FILE, DataError, Rejection, iter_file_records, write_rejections
from .validate import ParsedFile, ParseSettings

__all__ = [
    "CACHE_FORMAT_VERSION", "REJECTED_RECORDS_FILE", "DataError", "FileShard", "ParseSettings", "ParsedFile",
    "Rejection", "build_shard", "build_shards", "expand_data_files", "iter_file_records", "parse_session_file",
    "resolve_data_files", "write_rejections",
]
