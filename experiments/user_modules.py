"""`--user_module`: a user's file imported before an experiment reads its flags.

As fairseq's `--user-dir`: the file registers its families
(`seqjax.register_cell`, `seqjax.register_backbone`), and may define absl flags
of its own, and every experiment's `--models` then knows them:

    python -m experiments.copy_task --user_module=my_cells.py --models=lstm,indrnn

A value is a path to a `.py` file or an importable module name; the flag may be
repeated. Experiments call `run(main)` instead of `absl.app.run(main)`.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import pathlib
import sys
from collections.abc import Callable, Sequence
from types import ModuleType

from absl import app, flags

from seqjax import host

flags.DEFINE_multi_string(
    "user_module",
    [],
    "A Python file (path/to/file.py) or module to import first, e.g. one that registers a cell "
    "family with seqjax.register_cell; repeat for several.",
)

flags.DEFINE_boolean(
    "keep_freed_memory",
    False,
    "Have glibc's malloc keep freed memory for reuse: large XLA:CPU programs stop page-faulting "
    "their buffers in at every step, small ones run slower (seqjax.host says by how much).",
)

_FLAG = "--user_module"


def import_user_module(spec: str) -> ModuleType:
    """Imports a file path or a module name once per process; returns the module.

    Raises:
      app.UsageError: no such file or module.
    """
    path = pathlib.Path(spec)
    if path.suffix != ".py" and not path.is_file():
        try:
            return importlib.import_module(spec)
        except ImportError as error:
            raise app.UsageError(f"--user_module: no file or importable module {spec!r} ({error})") from None
    if not path.is_file():
        raise app.UsageError(f"--user_module: no file {spec!r}")
    path = path.resolve()
    # A name of its own: the file's stem alone could shadow a real module ("copy.py").
    name = f"user_module_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    if name not in sys.modules:
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        try:
            module_spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return sys.modules[name]


def specs_in(argv: Sequence[str]) -> list[str]:
    """The `--user_module` values of a command line (`--user_module=X` or `--user_module X`)."""
    specs = []
    for i, arg in enumerate(argv):
        if arg.startswith(_FLAG + "="):
            specs.append(arg[len(_FLAG) + 1 :])
        elif arg == _FLAG and i + 1 < len(argv):
            specs.append(argv[i + 1])
    return specs


def run(main: Callable[[list[str]], None]) -> None:
    """`absl.app.run(main)`, after importing the command line's user modules; with
    `--keep_freed_memory`, malloc's setting is made before `main` computes anything."""
    try:
        for spec in specs_in(sys.argv[1:]):
            import_user_module(spec)
    except app.UsageError as error:
        sys.exit(f"FATAL Flags parsing error: {error}")

    def with_host_settings(argv: list[str]) -> None:
        if flags.FLAGS.keep_freed_memory and not host.keep_freed_memory():
            raise app.UsageError("--keep_freed_memory needs Linux with glibc")
        main(argv)

    app.run(with_host_settings)
