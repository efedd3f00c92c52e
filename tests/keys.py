"""The key-encryption key tests seal blobs with (any 32 bytes do; fixed, so that a
registry, a projector and an audit made apart in one test agree)."""

from pathlib import Path

from mint.blobs.sealing import Kek

TEST_KEK_BYTES = bytes(range(32))
TEST_KEK = Kek(TEST_KEK_BYTES)


def kek_file(folder: Path) -> Path:
    """TEST_KEK as the file a process is given (`--kek-file`, MINT_KEK_FILE)."""
    path = folder / "kek.hex"
    path.write_text(TEST_KEK_BYTES.hex() + "\n")
    return path
