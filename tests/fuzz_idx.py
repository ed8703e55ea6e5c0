"""Coverage-guided fuzzing of pylenet.data.read_idx and pylenet.checkpoint.load_checkpoint with
atheris (libFuzzer for Python). Run by hand; CI runs the hypothesis fuzzers in test_fuzz.py.

    pip install atheris
    python tests/fuzz_idx.py idx -max_total_time=60 -rss_limit_mb=512 -timeout=5 tests/corpus
    python tests/fuzz_idx.py checkpoint -max_total_time=60 -rss_limit_mb=512 -timeout=5 tests/corpus

The first argument picks the reader; the rest go to libFuzzer (a corpus folder collects new
inputs: pass a scratch copy of tests/corpus to keep the committed seeds small). A finding is any
exception other than a ValueError whose message names the file; -timeout and -rss_limit_mb turn
hangs and large allocations into findings too.
"""
import os
import sys
import tempfile

import atheris

with atheris.instrument_imports():
    import pylenet.checkpoint as ck
    from pylenet.data import read_idx

READERS = {"idx": read_idx, "checkpoint": ck.load_checkpoint}


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in READERS:
        sys.exit(f"usage: {sys.argv[0]} {{{'|'.join(READERS)}}} [libFuzzer options] [corpus dirs]")
    reader = READERS[sys.argv[1]]
    folder = tempfile.mkdtemp(prefix="pylenet-fuzz-")
    path = os.path.join(folder, "input." + sys.argv[1])

    def one_input(data: bytes):
        with open(path, "wb") as f:
            f.write(data)
        try:
            reader(path)
        except ValueError as e:
            if path not in str(e):
                raise AssertionError(f"the message does not name the file: {e}") from e

    atheris.Setup([sys.argv[0]] + sys.argv[2:], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
