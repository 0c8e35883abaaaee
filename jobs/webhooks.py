"""Job webhooks: POST the JobView JSON to the job's ``webhook_url`` on every terminal state.

Delivery runs in a background thread with short timeouts and a few tries with backoff; it
never blocks or fails the job, nor the API request that cancelled a queued job. Each
delivery carries one ``X-Toonforge-Delivery`` id for all its tries, so a receiver can drop
duplicates. Torch-free (stdlib HTTP only): the worker and the API both send them.

A webhook URL is chosen by whoever submits a job, so delivering it is a request the server
makes on a stranger's behalf (server-side request forgery). The rules, in order:

- only ``http`` and ``https``;
- the host is resolved once per try and *every* address it resolves to must be public:
  loopback, private, link-local, multicast, reserved, unspecified and other non-global
  addresses are refused (IPv4 and IPv6; IPv4-mapped, 6to4 and Teredo IPv6 are judged by the
  IPv4 address they carry; odd IPv4 spellings such as ``2130706433`` or ``0x7f000001`` are
  literals too, and ``localhost`` is never resolved);
- the connection goes to the address that was checked (the socket is opened to that IP;
  the Host header and TLS SNI carry the name), so a second DNS answer cannot redirect it
  (no rebinding window);
- redirects are not followed: a 3xx answer is a failed delivery;
- ``Settings.webhook_allow_hosts`` names hosts (exact names or IP literals) exempt from the
  address rule, for receivers on a private network.

Every try is recorded as a job event of kind ``webhook`` (host, try, status code or error).
"""

from __future__ import annotations

import http.client
import ipaddress
import logging
import re
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from core.errors import InvalidParameter
from jobs.records import JobRecord
from jobs.states import JobStatus
from jobs.views import job_view

if TYPE_CHECKING:
    from core.settings import Settings
    from jobs.repository import JobRepository

log = logging.getLogger(__name__)

BACKOFF_S = 1.0  # first wait; doubles after each failed try
SCHEMES = frozenset({"http", "https"})
EVENT_KIND = "webhook"
# What glibc's inet_aton reads as an IPv4 address: decimal, octal or hex parts, 1-4 of them.
_NUMERIC_HOST = re.compile(r"^(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}\.?$")
_MAX_ANSWER_BYTES = 64 * 1024  # read (and drop) at most this much of a receiver's answer

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class WebhookRefused(Exception):
    """The URL may not be delivered to; the message says why (safe to record)."""


# ---- addresses
def literal_address(host: str) -> IPAddress | None:
    """The IP address ``host`` spells, in any form a resolver would accept, or None."""
    text = host.strip("[]")
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        pass
    if _NUMERIC_HOST.match(text.lower()):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(text.rstrip(".")))
        except OSError:
            return None
    return None


def address_problem(address: IPAddress) -> str | None:
    """Why ``address`` is not a public one (None when it is)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour or (
            address.teredo[1] if address.teredo else None)
        if embedded is not None:
            problem = address_problem(embedded)
            return f"{problem} (embedded in {address})" if problem else None
    for attribute, name in (("is_unspecified", "unspecified"), ("is_loopback", "loopback"),
                            ("is_link_local", "link-local"), ("is_multicast", "multicast"),
                            ("is_private", "private"), ("is_reserved", "reserved")):
        if getattr(address, attribute):
            return name
    if not address.is_global:
        return "not globally routable"
    return None


def _normal_host(host: str) -> str:
    host = host.strip().lower().rstrip(".")
    address = literal_address(host)
    return str(address) if address is not None else host.strip("[]")


def host_allowed(host: str, allow_hosts: Collection[str]) -> bool:
    """``host`` is named by the allow setting (exact name, or the same IP literal)."""
    wanted = _normal_host(host)
    return any(_normal_host(h) == wanted for h in allow_hosts if h.strip())


def _is_localhost(host: str) -> bool:
    name = host.lower().rstrip(".")
    return name == "localhost" or name.endswith(".localhost")


@dataclass(frozen=True)
class Target:
    """Where one try goes: the URL's parts and the checked address to connect to."""

    scheme: str
    host: str  # as in the URL: sent as Host and as the TLS server name
    port: int
    path: str
    address: str  # the validated IP the socket is opened to


def _split(url: str) -> tuple[str, str, int, str]:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise WebhookRefused(f"not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise WebhookRefused(f"scheme {scheme or '(none)'!r} is not allowed: use http or https")
    host = parts.hostname or ""
    if not host:
        raise WebhookRefused("the URL has no host")
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return scheme, host, port or (443 if scheme == "https" else 80), path


def static_problem(url: str, allow_hosts: Collection[str] = ()) -> str | None:
    """What is wrong with ``url`` without resolving it (scheme, host, literal addresses)."""
    try:
        _, host, _, _ = _split(url)
    except WebhookRefused as exc:
        return str(exc)
    if host_allowed(host, allow_hosts):
        return None
    if _is_localhost(host):
        return f"host {host!r} is loopback (not allowed; see webhook_allow_hosts)"
    address = literal_address(host)
    if address is not None and (problem := address_problem(address)):
        return f"address {address} is {problem} (not allowed; see webhook_allow_hosts)"
    return None


def check_webhook_url(url: str, allow_hosts: Collection[str] = ()) -> None:
    """The static check at job submission: ``InvalidParameter`` (422) naming the problem.
    The resolved addresses are checked again at every delivery."""
    if (problem := static_problem(url, allow_hosts)) is not None:
        raise InvalidParameter("webhook_url", problem)


def resolve_host(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, in the resolver's order (tests replace this)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def pin_target(url: str, allow_hosts: Collection[str] = ()) -> Target:
    """Resolve and check ``url``'s host once; ``WebhookRefused`` when it may not be used."""
    scheme, host, port, path = _split(url)
    if (problem := static_problem(url, allow_hosts)) is not None:
        raise WebhookRefused(problem)
    allowed = host_allowed(host, allow_hosts)
    literal = literal_address(host)
    if literal is not None:
        return Target(scheme, host, port, path, str(literal))
    try:
        addresses = resolve_host(host, port)
    except (OSError, UnicodeError) as exc:
        raise WebhookRefused(f"host {host!r} does not resolve ({exc})") from None
    if not addresses:
        raise WebhookRefused(f"host {host!r} does not resolve")
    checked: list[IPAddress] = []
    for text in addresses:
        address = ipaddress.ip_address(text.split("%", 1)[0])
        if not allowed and (problem := address_problem(address)):
            raise WebhookRefused(f"host {host!r} resolves to {address}, which is {problem}"
                                 " (not allowed; see webhook_allow_hosts)")
        checked.append(address)
    return Target(scheme, host, port, path, str(checked[0]))


# ---- connecting
def open_connection(address: tuple[str, int], timeout: float | None,
                    source_address: tuple[str, int] | None = None) -> socket.socket:
    """Open the TCP connection of one try (tests replace this to see where it goes)."""
    return socket.create_connection(address, timeout, source_address)


def _connection(target: Target, timeout_s: float) -> http.client.HTTPConnection:
    conn: http.client.HTTPConnection
    if target.scheme == "https":
        conn = http.client.HTTPSConnection(target.host, target.port, timeout=timeout_s,
                                           context=ssl.create_default_context())
    else:
        conn = http.client.HTTPConnection(target.host, target.port, timeout=timeout_s)

    # http.client connects to (self.host, self.port), resolving the name again; open the
    # socket to the checked address instead. Host and SNI still come from target.host.
    def connect(_address: tuple[str, int], timeout: float | None = None,
                source_address: tuple[str, int] | None = None) -> socket.socket:
        return open_connection((target.address, target.port), timeout, source_address)

    conn._create_connection = connect  # type: ignore[attr-defined]
    return conn


def post_once(target: Target, body: bytes, headers: dict[str, str], timeout_s: float) -> int:
    """One POST to ``target``; returns the status code (redirects are not followed)."""
    conn = _connection(target, timeout_s)
    try:
        conn.request("POST", target.path, body=body, headers=headers)
        response = conn.getresponse()
        response.read(_MAX_ANSWER_BYTES)
        return response.status
    finally:
        conn.close()


# ---- delivery
Attempt = dict[str, Any]


def deliver(url: str, body: bytes, headers: dict[str, str], *, timeout_s: float,
            tries: int, allow_hosts: Collection[str] = (),
            on_attempt: Callable[[Attempt], None] | None = None) -> bool:
    """POST until a 2xx answer or ``tries`` attempts. A refused address, a redirect (3xx)
    and a 4xx (except 408/429) end it early. ``on_attempt`` gets one dict per try (host,
    attempt, status_code or error, delivered)."""
    wait = BACKOFF_S
    host = urlsplit(url).hostname or ""
    for attempt in range(1, tries + 1):
        record: Attempt = {"host": host, "attempt": attempt, "tries": tries,
                           "status_code": None, "error": None, "delivered": False}
        retry = True
        try:
            target = pin_target(url, allow_hosts)
            status = post_once(target, body, headers, timeout_s)
            record["status_code"] = status
            if 200 <= status < 300:
                record["delivered"] = True
            elif 300 <= status < 400:
                record["error"] = "redirect not followed"
                retry = False
            elif 400 <= status < 500 and status not in (408, 429):
                record["error"] = "refused by the receiver"
                retry = False
            else:
                record["error"] = f"HTTP {status}"
        except WebhookRefused as exc:
            record["error"] = f"refused: {exc}"
            retry = False
        except (OSError, http.client.HTTPException, ValueError) as exc:
            # refused connections, timeouts, TLS failures, malformed answers
            record["error"] = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        log.log(logging.INFO if record["delivered"] else logging.WARNING,
                "webhook to %s try %d/%d: %s", host, attempt, tries,
                record["status_code"] if record["delivered"] else record["error"])
        if on_attempt is not None:
            try:
                on_attempt(record)
            except Exception:  # recording must never stop a delivery
                log.exception("could not record the webhook try")
        if record["delivered"]:
            return True
        if not retry:
            return False
        if attempt < tries:
            time.sleep(wait)
            wait *= 2
    return False


def notify_terminal(job: JobRecord, settings: Settings, repo: JobRepository | None = None
                    ) -> threading.Thread | None:
    """Send the job's final view to its webhook in the background; returns the thread.
    With ``repo`` every try is recorded as a ``webhook`` event of the job."""
    if not job.webhook_url or not JobStatus(job.status).is_terminal:
        return None
    body = job_view(job).model_dump_json().encode()
    event = f"job.{job.status}"
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "toonforge-webhook/1",
        "X-Toonforge-Event": event,
        "X-Toonforge-Delivery": uuid.uuid4().hex,
    }
    job_id = job.id

    def record(attempt: Attempt) -> None:
        if repo is not None:
            repo.append_event(job_id, EVENT_KIND, {"event": event, **attempt})

    thread = threading.Thread(
        target=deliver, args=(job.webhook_url, body, headers),
        kwargs={"timeout_s": settings.webhook_timeout_s, "tries": settings.webhook_tries,
                "allow_hosts": settings.webhook_allow_hosts, "on_attempt": record},
        name=f"webhook-{job.id[:8]}", daemon=True,
    )
    thread.start()
    return thread
