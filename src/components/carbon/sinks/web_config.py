"""TLS and basic auth for /metrics, read from a Prometheus exporter-toolkit style web config.

Operators already write these files for node_exporter (``--web.config.file``); the same
file works here (``metrics_web_config``). Supported keys:

    tls_server_config:
      cert_file: /etc/tta/staging/tls/cert.pem
      key_file: /etc/tta/staging/tls/key.pem
    basic_auth_users:
      prometheus: $2y$10$...   # bcrypt, as `htpasswd -nBC 10 "" | tr -d ':\\n'` prints
"""

from __future__ import annotations

import base64
import hashlib
import ssl
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from src.components.carbon.files import NotARegularFile, read_small_file

_KNOWN_TLS_KEYS = {"cert_file", "key_file"}


@dataclass(frozen=True)
class WebConfig:
    cert_file: Path | None = None
    key_file: Path | None = None
    users: dict[str, bytes] = field(default_factory=dict)  # user -> bcrypt hash
    # Built (and so checked) once by load_web_config; the server serves with this very context.
    context: ssl.SSLContext | None = field(default=None, compare=False, repr=False)

    @property
    def tls(self) -> bool:
        return self.context is not None


def _server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    return context


def _shown(path: Path) -> str:
    text = str(path)
    return text if text.isprintable() else repr(text)  # one line, even for a path holding control characters


def load_web_config(path: Path) -> WebConfig:
    """Parse and check the file; ValueError carries one line naming what is wrong."""
    import yaml  # here, not at import: the daemon loads PyYAML only when a web config is set

    name = _shown(path)
    try:
        data = yaml.safe_load(read_small_file(path).decode("utf-8")) or {}  # FIFOs, devices refused
    except NotARegularFile as exc:
        raise ValueError(f"{name} {exc.strerror}") from None
    except OSError as exc:
        raise ValueError(f"cannot read {name}: {exc.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ValueError(f"{name} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{name}: top level must be a mapping")
    unknown = set(data) - {"tls_server_config", "basic_auth_users"}
    if unknown:
        raise ValueError(f"{name}: unsupported key {sorted(unknown)[0]!r} (supported: tls_server_config, "
                         "basic_auth_users)")
    cert = key = context = None
    tls = data.get("tls_server_config")
    if tls is not None:
        if not isinstance(tls, dict) or set(tls) - _KNOWN_TLS_KEYS or not _KNOWN_TLS_KEYS <= set(tls):
            raise ValueError(f"{name}: tls_server_config needs exactly cert_file and key_file")
        cert, key = Path(tls["cert_file"]), Path(tls["key_file"])
        try:
            context = _server_context(cert, key)
        except (OSError, ssl.SSLError) as exc:
            detail = " ".join(str(exc).split())
            raise ValueError(f"{name}: cannot load cert_file/key_file: {detail}") from None
    users: dict[str, bytes] = {}
    raw_users = data.get("basic_auth_users") or {}
    if not isinstance(raw_users, dict):
        raise ValueError(f"{name}: basic_auth_users must map user names to bcrypt hashes")
    for user, hashed in raw_users.items():
        if not isinstance(hashed, str) or not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            raise ValueError(f"{name}: basic_auth_users.{user}: not a bcrypt hash (expected $2y$...)")
        users[str(user)] = hashed.encode()
    return WebConfig(cert, key, users, context)


class BasicAuth:
    """Checks Authorization headers; bcrypt is slow on purpose, so verdicts are cached by digest.

    ``cached`` runs on the event loop and ``check`` on worker threads (asyncio.to_thread),
    so the cache is only touched under ``_lock``; bcrypt itself runs outside it.
    """

    def __init__(self, users: dict[str, bytes], cache_size: int = 256) -> None:
        self._users = users
        self._cache: OrderedDict[bytes, bool] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def cached(self, header: bytes | None) -> bool | None:
        """The verdict without any bcrypt work, or None when it needs checking."""
        if header is None or not header.lower().startswith(b"basic "):
            return False
        key = hashlib.sha256(header).digest()
        with self._lock:
            verdict = self._cache.get(key)
            if verdict is not None:
                self._cache.move_to_end(key)
            return verdict

    def check(self, header: bytes) -> bool:
        verdict = self._verify(header[6:].strip())
        with self._lock:
            self._cache[hashlib.sha256(header).digest()] = verdict
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return verdict

    def _verify(self, token: bytes) -> bool:
        import bcrypt

        try:
            user, _, password = base64.b64decode(token, validate=True).partition(b":")
        except ValueError:
            return False
        hashed = self._users.get(user.decode("utf-8", "replace"))
        if hashed is None:
            # Spend the same time as a real check so user names cannot be probed by timing.
            bcrypt.checkpw(password, next(iter(self._users.values())))
            return False
        return bcrypt.checkpw(password, hashed)
