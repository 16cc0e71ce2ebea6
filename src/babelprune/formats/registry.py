"""Which saved format a folder holds: a table of marker file -> loader that `load_model` consults.

Each folder babelprune writes carries a marker file saying how to rebuild
the model from it. A format whose folders transformers loads as they are
(Dynamic Sparsification: a full-width HF folder with metadata beside it)
needs no row. A new format (a trimmed vocabulary, a GGUF export) adds its
module to this package and one row here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from babelprune.formats.finetuned import FINETUNED_FILE, load_finetuned
from babelprune.formats.pruned import METADATA_FILE, load_pruned
from babelprune.formats.structured import STRUCTURE_FILE, load_structured
from babelprune.formats.trimmed import VOCABULARY_FILE, load_trimmed
from babelprune.models.base import LoadedModel

FolderLoader = Callable[[Path], LoadedModel]

# marker file -> the loader of folders that hold it (the first match wins)
SAVED_FORMATS: dict[str, FolderLoader] = {
    METADATA_FILE: load_pruned,
    STRUCTURE_FILE: load_structured,
    VOCABULARY_FILE: load_trimmed,
    FINETUNED_FILE: load_finetuned,
}


def saved_format_loader(folder: Path) -> FolderLoader | None:
    """The loader of the saved format `folder` holds, None for anything else (an alias, a plain folder, a hub id)."""
    folder = Path(folder)
    for marker, loader in SAVED_FORMATS.items():
        if (folder / marker).is_file():
            return loader
    return None
