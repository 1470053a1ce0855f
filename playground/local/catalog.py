"""The image catalog: which local program runs a container image on the local playground.

The local backend cannot pull and run OCI images; instead each image *repository* maps to a program on
this machine. :func:`lookup` (or :meth:`Catalog.lookup`) turns an image reference into a :class:`Program`,
and :meth:`Program.launch` builds the argv and environment of one replica from the container's spec.

Matching an image
-----------------
An image reference such as ``ghcr.io/stefanprodan/podinfo:6.7.0``, ``stefanprodan/podinfo@sha256:...`` or
``127.0.0.1:5000/stefanprodan/podinfo:6.8.0`` is split (:func:`parse_image`) into registry host,
repository path, tag and digest (the first path component is a registry host when it contains ``.`` or
``:`` or is ``localhost``). It is looked up by, in order: ``registry/path`` exactly, ``path`` exactly, then
the **last two segments** of the path (``stefanprodan/podinfo``), so a copy of podinfo pushed to a local
registry, to quay.io or to ghcr.io runs the same program. A one-segment Docker Hub name ``nginx`` is
``library/nginx``.

Built-in programs
-----------------
``stefanprodan/podinfo`` -> ``python -m playground.local.podinfo --port=<port> --version=<tag> <flags>``
    The flags of the container's ``command`` + ``args`` (``./podinfo --port=9898 --level=info
    --random-error`` ...) are kept, except the program path and ``--port``/``--version``/``--host``: the
    catalog sets the port so that replicas do not collide and the version to the image tag, and replicas
    listen on 127.0.0.1.
``fluxcd/flagger-loadtester`` (also ``weaveworks/flagger-loadtester``) ->
    ``python -m playground.local.loadtester --port=<port> --allowlist=<path> <flags>``: the container's
    Go-style flags (``-timeout=1h``, ``-log-level=info``) are kept except ``-port``; the allowlist path is
    given by the caller (``allowlist=`` of :meth:`Program.launch`).

Registering your own images: ``$PLAYGROUND_HOME/catalog.yaml``
-------------------------------------------------------------
(``PLAYGROUND_HOME`` defaults to ``.playground``.) Entries are merged over the built-ins (an entry for
``stefanprodan/podinfo`` replaces the built-in one)::

    images:
      # run a program of yours; {port} and {tag} are replaced per replica
      ghcr.io/acme/orders:
        argv: ["{python}", "-m", "acme.orders", "--listen=127.0.0.1:{port}", "--release={tag}"]
        env:                       # optional, added to the container's own env
          ORDERS_MODE: demo
        args: false                # optional: true appends the container's command/args flags
      # an image that is podinfo under another name
      acme/frontend:
        builtin: podinfo           # or: loadtester

Placeholders in ``argv`` and ``env`` values: ``{port}`` (the replica's port), ``{tag}`` (image tag, or
``latest``), ``{image}`` (the full reference), ``{python}`` (this Python interpreter), ``{home}``
(``$PLAYGROUND_HOME``) and ``{catalog_dir}`` (the catalog file's directory); write ``{{``/``}}`` for
literal braces. A relative program path such as ``bin/orders`` (containing ``/``) is resolved against the
catalog file's directory. The program must listen on ``127.0.0.1:{port}``.

The environment :meth:`Program.launch` returns is the container's ``env`` (already resolved by the
caller) plus the program's own variables; the caller adds the process environment and proxy variables.
An image that maps to nothing raises :class:`UnknownImage`, naming the image, the known repositories and
how to register one.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playground.errors import PlaygroundError

__all__ = [
    "BUILTIN_PROGRAMS",
    "Catalog",
    "CatalogError",
    "ImageRef",
    "Launch",
    "Program",
    "UnknownImage",
    "catalog_path",
    "lookup",
    "parse_image",
]


class UnknownImage(PlaygroundError, LookupError):
    """No program is registered for an image repository."""

    def __init__(self, image: str, known: Sequence[str], catalog_file: Path | None = None) -> None:
        self.image = image
        self.known = list(known)
        where = str(catalog_file) if catalog_file else "$PLAYGROUND_HOME/catalog.yaml"
        super().__init__(
            f"no local program is registered for image {image!r}: the local playground runs images through its "
            f"image catalog, which knows {', '.join(self.known) or 'no repository'}. To run this image, add an "
            f"entry for its repository to {where}, e.g.\n"
            f"images:\n  {parse_image(image).key if _parsable(image) else 'owner/name'}:\n"
            f'    argv: ["/path/to/program", "--port={{port}}"]\n'
            f"(or `builtin: podinfo` if it is podinfo under another name)."
        )


class CatalogError(PlaygroundError, ValueError):
    """The user catalog file is invalid (the message names the file and the entry)."""


# ------------------------------------------------------------------------------------------ image refs


@dataclass(frozen=True)
class ImageRef:
    """A parsed image reference."""

    reference: str
    registry: str | None  # "ghcr.io", "127.0.0.1:5000", None for Docker Hub without a host
    path: str  # "stefanprodan/podinfo"
    tag: str | None
    digest: str | None

    @property
    def key(self) -> str:
        """The last two segments of the repository path: what the catalog matches on."""
        parts = self.path.split("/")
        return "/".join(parts[-2:]) if len(parts) > 1 else f"library/{parts[0]}"

    @property
    def repository(self) -> str:
        return f"{self.registry}/{self.path}" if self.registry else self.path


_PATH_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")


def parse_image(image: str) -> ImageRef:
    """Split ``[registry/]path[:tag][@digest]``; raises ValueError on a malformed reference."""
    ref = str(image).strip()
    if not ref:
        raise ValueError("empty image reference")
    rest, _, digest = ref.partition("@")
    registry = None
    first, slash, remainder = rest.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        registry, rest = first, remainder
    tag = None
    last_slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > last_slash:
        rest, tag = rest[:colon], rest[colon + 1 :]
        if not re.fullmatch(r"[\w][\w.-]{0,127}", tag):
            raise ValueError(f"invalid tag {tag!r} in image reference {image!r}")
    if not _PATH_RE.match(rest):
        raise ValueError(f"invalid repository {rest!r} in image reference {image!r}")
    if digest and not re.fullmatch(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+", digest):
        raise ValueError(f"invalid digest {digest!r} in image reference {image!r}")
    return ImageRef(ref, registry, rest, tag, digest or None)


def _parsable(image: str) -> bool:
    try:
        parse_image(image)
        return True
    except ValueError:
        return False


# ------------------------------------------------------------------------------------------- programs


@dataclass(frozen=True)
class Launch:
    """How to start one replica: the argument vector and the environment to add."""

    argv: list[str]
    env: dict[str, str]


def _container_env(container: Mapping[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in container.get("env") or []:
        if isinstance(item, Mapping) and item.get("name"):
            value = item.get("value")
            env[str(item["name"])] = "" if value is None else str(value)
    return env


def _container_flags(container: Mapping[str, Any]) -> list[str]:
    """``command`` + ``args`` of a container without the leading program path(s)."""
    words = [str(w) for w in list(container.get("command") or []) + list(container.get("args") or [])]
    while words and not words[0].startswith("-"):
        words.pop(0)
    return words


def _drop_flags(words: list[str], names: set[str], *, value_flags: set[str]) -> list[str]:
    """Remove ``--name``/``-name`` flags (with ``=value`` or, for ``value_flags``, a separate value)."""
    out: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if word.startswith("-"):
            name, eq, _ = word.lstrip("-").partition("=")
            if name in names:
                if not eq and name in value_flags and i < len(words) and not words[i].startswith("-"):
                    i += 1
                continue
        out.append(word)
    return out


@dataclass(frozen=True)
class Program:
    """A local program that runs the replicas of some image repositories.

    ``build`` receives ``(program, container, port, tag, context)`` and returns the argv; ``env`` holds
    extra variables (templates) added to the container's own env.
    """

    name: str
    description: str
    build: Callable[[Program, Mapping[str, Any], int, str, dict[str, Any]], list[str]] = field(repr=False)
    env: Mapping[str, str] = field(default_factory=dict)
    source: str = "built-in"

    def launch(
        self,
        container: Mapping[str, Any],
        *,
        port: int,
        tag: str | None,
        allowlist: str | os.PathLike[str] | None = None,
        image: str = "",
        home: str | os.PathLike[str] | None = None,
    ) -> Launch:
        """argv + env for one replica of ``container`` (a pod spec container dict, env already resolved)
        listening on ``port``; ``tag`` is the image tag (None -> ``latest``); ``allowlist`` is the
        load tester's allowlist file (required by the loadtester program)."""
        tag = tag or "latest"
        context = {
            "port": int(port),
            "tag": tag,
            "image": image,
            "python": sys.executable,
            "home": str(home if home is not None else playground_home()),
            "allowlist": allowlist,
        }
        argv = self.build(self, container, int(port), tag, context)
        env = _container_env(container)
        for key, value in self.env.items():
            env[key] = _format(value, context, f"env {key} of {self.source}")
        return Launch(argv, env)


def _build_podinfo(_: Program, container: Mapping[str, Any], port: int, tag: str, context: dict[str, Any]) -> list[str]:
    flags = _drop_flags(
        _container_flags(container), {"port", "version", "v", "host"}, value_flags={"port", "version", "host"}
    )
    return [sys.executable, "-m", "playground.local.podinfo", f"--port={port}", f"--version={tag}", *flags]


def _build_loadtester(
    _: Program, container: Mapping[str, Any], port: int, tag: str, context: dict[str, Any]
) -> list[str]:
    allowlist = context.get("allowlist")
    if not allowlist:
        raise ValueError("the flagger-loadtester program needs the allowlist file: pass allowlist=PATH")
    flags = _drop_flags(
        _container_flags(container), {"port", "allowlist", "host"}, value_flags={"port", "allowlist", "host"}
    )
    return [
        sys.executable,
        "-m",
        "playground.local.loadtester",
        f"--port={port}",
        f"--allowlist={os.fspath(allowlist)}",
        *flags,
    ]


PODINFO = Program("podinfo", "podinfo-compatible demo app (playground.local.podinfo)", _build_podinfo)
LOADTESTER = Program("loadtester", "Flagger load tester (playground.local.loadtester)", _build_loadtester)

#: repository (as matched) -> program
BUILTIN_PROGRAMS: dict[str, Program] = {
    "stefanprodan/podinfo": PODINFO,
    "fluxcd/flagger-loadtester": LOADTESTER,
    "weaveworks/flagger-loadtester": LOADTESTER,
}
_BUILTINS_BY_NAME = {"podinfo": PODINFO, "loadtester": LOADTESTER, "flagger-loadtester": LOADTESTER}


# ------------------------------------------------------------------------------------ user catalog file


def playground_home() -> Path:
    return Path(os.environ.get("PLAYGROUND_HOME") or ".playground")


def catalog_path(home: str | os.PathLike[str] | None = None) -> Path:
    """``$PLAYGROUND_HOME/catalog.yaml`` (or ``<home>/catalog.yaml``)."""
    return Path(home if home is not None else playground_home()) / "catalog.yaml"


class _Placeholders(dict):
    def __missing__(self, key: str) -> str:
        raise KeyError(key)


def _format(template: str, context: Mapping[str, Any], where: str) -> str:
    try:
        return str(template).format_map(_Placeholders({k: "" if v is None else v for k, v in context.items()}))
    except KeyError as exc:
        raise CatalogError(
            f"{where}: unknown placeholder {{{exc.args[0]}}}; use {{port}}, {{tag}}, {{image}}, "
            f"{{python}}, {{home}} or {{catalog_dir}}"
        ) from None
    except (ValueError, IndexError) as exc:
        raise CatalogError(f"{where}: invalid template {template!r}: {exc}") from None


def _template_program(file: Path, repo: str, entry: Mapping[str, Any]) -> Program:
    where = f"{file}: images.{repo}"
    argv_t = entry.get("argv")
    if isinstance(argv_t, str):
        raise CatalogError(f'{where}.argv must be a list of strings, like ["/path/to/program", "--port={{port}}"]')
    if not isinstance(argv_t, list) or not argv_t or not all(isinstance(a, (str, int, float)) for a in argv_t):
        raise CatalogError(f"{where}: `argv` (a non-empty list of strings) or `builtin` is required")
    env_t = entry.get("env") or {}
    if not isinstance(env_t, Mapping) or not all(isinstance(k, str) for k in env_t):
        raise CatalogError(f"{where}.env must be a mapping of variable names to values")
    append_args = entry.get("args", False)
    if not isinstance(append_args, bool):
        raise CatalogError(f"{where}.args must be true or false")
    unknown = set(entry) - {"argv", "env", "args", "description"}
    if unknown:
        raise CatalogError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}; use argv, env, args or builtin")
    catalog_dir = str(file.parent.resolve())
    templates = [str(a) for a in argv_t]
    # report a bad template when the catalog is loaded, not when a replica starts
    sample = {
        "port": 1,
        "tag": "t",
        "image": "i",
        "python": "p",
        "home": "h",
        "allowlist": "",
        "catalog_dir": catalog_dir,
    }
    for t in templates:
        _format(t, sample, f"{where}.argv")
    for k, v in env_t.items():
        _format(str(v), sample, f"{where}.env.{k}")

    def build(
        program: Program, container: Mapping[str, Any], port: int, tag: str, context: dict[str, Any]
    ) -> list[str]:
        ctx = {**context, "catalog_dir": catalog_dir}
        argv = [_format(t, ctx, f"{where}.argv") for t in templates]
        first = argv[0]
        if "/" in first and not os.path.isabs(first):
            argv[0] = str(Path(catalog_dir) / first)
        if append_args:
            argv += _container_flags(container)
        return argv

    env = {k: str(v) for k, v in env_t.items()}
    # the env templates may use {catalog_dir}: pre-substitute it, keep the rest for launch time
    env = {k: v.replace("{catalog_dir}", catalog_dir) for k, v in env.items()}
    return Program(f"custom:{repo}", str(entry.get("description") or f"{repo} (from {file})"), build, env, source=where)


def load_user_catalog(file: Path) -> dict[str, Program]:
    """Programs of a catalog file (see the module docstring); {} when the file does not exist."""
    if not file.is_file():
        return {}
    import yaml  # imported lazily: the catalog is used by short-lived processes too

    from playground import yamlload

    try:
        docs = yamlload.load_file(file)
    except yamlload.Refused as exc:
        raise CatalogError(f"{file}: cannot read the image catalog: {exc}") from None
    except yaml.YAMLError as exc:
        msg, line, _ = yamlload.describe(exc)
        raise CatalogError(f"{file}:{line}: cannot read the image catalog: {msg}") from None
    if len(docs) > 1:
        raise CatalogError(f"{file}: expected one YAML document, found {len(docs)}")
    data = docs[0] if docs else None
    if data is None:
        return {}
    if not isinstance(data, Mapping) or not isinstance(data.get("images", {}), Mapping):
        raise CatalogError(f"{file}: expected a mapping with an `images:` mapping of repository -> program")
    extra = set(data) - {"images"}
    if extra:
        raise CatalogError(f"{file}: unknown top-level key(s) {', '.join(sorted(map(str, extra)))}; use `images:`")
    programs: dict[str, Program] = {}
    for repo, entry in (data.get("images") or {}).items():
        repo = str(repo)
        try:
            ref = parse_image(repo)
        except ValueError as exc:
            raise CatalogError(f"{file}: images.{repo}: {exc}") from None
        if ref.tag or ref.digest:
            raise CatalogError(f"{file}: images.{repo}: use a repository without tag or digest")
        key = ref.repository
        if not isinstance(entry, Mapping):
            raise CatalogError(f"{file}: images.{repo} must be a mapping with `argv` (and optional `env`) or `builtin`")
        if "builtin" in entry:
            name = str(entry["builtin"])
            if name not in _BUILTINS_BY_NAME or set(entry) - {"builtin", "description"}:
                raise CatalogError(
                    f"{file}: images.{repo}.builtin must be one of podinfo, loadtester (and alone, without argv/env)"
                )
            programs[key] = _BUILTINS_BY_NAME[name]
        else:
            programs[key] = _template_program(file, repo, entry)
    return programs


# -------------------------------------------------------------------------------------------- catalog


class Catalog:
    """Built-in programs merged with the user's catalog file."""

    def __init__(self, programs: Mapping[str, Program] | None = None, *, file: Path | None = None) -> None:
        self.programs: dict[str, Program] = dict(BUILTIN_PROGRAMS if programs is None else programs)
        self.file = file

    @classmethod
    def load(cls, home: str | os.PathLike[str] | None = None) -> Catalog:
        """Built-ins + ``<home or $PLAYGROUND_HOME>/catalog.yaml``; raises CatalogError for a bad file."""
        file = catalog_path(home)
        programs = dict(BUILTIN_PROGRAMS)
        programs.update(load_user_catalog(file))
        return cls(programs, file=file)

    def repositories(self) -> list[str]:
        return sorted(self.programs)

    def lookup(self, image: str) -> Program:
        """The program for ``image``; raises UnknownImage (also for an unparsable reference)."""
        try:
            ref = parse_image(image)
        except ValueError as exc:
            raise UnknownImage(image, self.repositories(), self.file) from exc
        for key in (ref.repository, ref.path, ref.key):
            program = self.programs.get(key)
            if program is not None:
                return program
        # user keys written with a registry match on their last two segments as well
        for key, program in self.programs.items():
            if parse_image(key).key == ref.key:
                return program
        raise UnknownImage(image, self.repositories(), self.file)


def lookup(image: str, *, home: str | os.PathLike[str] | None = None) -> Program:
    """``Catalog.load(home).lookup(image)``: the program that runs ``image`` on the local playground."""
    return Catalog.load(home).lookup(image)
