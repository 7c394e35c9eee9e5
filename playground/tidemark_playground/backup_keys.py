"""The playground's backup keys: the key files a fleet's nodes encrypt with (`--backup-key-file`),
or a key generated into the fleet's directory, so a playground backup is encrypted by default."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tidemark_backup.sealed import Keyring, new_key_file

KEY_FILE = "backup.key"  # DIR/backup.key: 32 random bytes as hex, mode 0600


def key_options(directory: Path, key_files: Sequence[Path], generate: bool) -> dict:
    """Fleet options (`backup_key_files`: absolute paths, never keys) for the given key
    files, checked now; without any and with GENERATE, DIR/backup.key (made if missing)."""
    if key_files:
        Keyring.from_files(key_files)  # a bad file is refused before anything starts
        return {"backup_key_files": [str(Path(p).resolve()) for p in key_files]}
    if not generate:
        return {}
    path = directory / KEY_FILE
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        new_key_file(path)
    return {"backup_key_files": [str(path.resolve())]}
