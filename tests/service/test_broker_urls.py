"""Every REDIS_URL form kombu accepts reaches the same Redis database for sending a job and for
listing the queue (the reconciler's view): TCP with a db and a password, TLS (rediss:// with
kombu's ssl_* options), and a Unix socket (redis+socket://, its db in ?virtual_host=). Against a
redis-server of its own, listening on all three, with a password that needs quoting."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
from pydantic import ValidationError

from core.config import Settings
from service.broker import Broker

PASSWORD = "s3/cr@t"  # needs quoting in a URL


@dataclass
class RedisServer:
    port: int
    tls_port: int
    socket: Path
    ca: Path

    def client(self, db: int) -> redis.Redis:
        return redis.Redis(unix_socket_path=str(self.socket), password=PASSWORD, db=db)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    for tool in ("redis-server", "openssl"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed (apt-get install redis-server openssl)")
    folder = tmp_path_factory.mktemp("redis")
    cert, key = folder / "cert.pem", folder / "key.pem"  # self-signed: the certificate is its own CA
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    running = RedisServer(free_port(), free_port(), folder / "redis.sock", cert)
    command = [
        "redis-server",
        "--port",
        str(running.port),
        "--bind",
        "127.0.0.1",
        "--unixsocket",
        str(running.socket),
        "--unixsocketperm",
        "700",
        "--tls-port",
        str(running.tls_port),
        "--tls-cert-file",
        str(cert),
        "--tls-key-file",
        str(key),
        "--tls-ca-cert-file",
        str(cert),
        "--tls-auth-clients",
        "no",
        "--requirepass",
        PASSWORD,
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(folder),
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                running.client(0).ping()
                break
            except redis.ConnectionError:
                assert process.poll() is None and time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        yield running
    finally:
        process.kill()
        process.wait(timeout=10)


SECRET = quote(PASSWORD, safe="")
TLS = "rediss://:{secret}@127.0.0.1:{tls_port}"
URLS = {  # form -> (REDIS_URL, the database kombu uses)
    "tcp, db 2": ("redis://:{secret}@127.0.0.1:{port}/2", 2),
    "tcp, user and password": ("redis://default:{secret}@127.0.0.1:{port}", 0),
    "tls, CERT_REQUIRED": (TLS + "/1?ssl_cert_reqs=CERT_REQUIRED&ssl_ca_certs={ca}", 1),  # as Celery's docs write it
    "tls, required": (TLS + "/4?ssl_cert_reqs=required&ssl_ca_certs={ca}", 4),
    "unix socket": ("redis+socket://:{secret}@{socket}", 0),
    "unix socket, virtual_host 3": ("redis+socket://:{secret}@{socket}?virtual_host=3", 3),
}


@pytest.mark.parametrize("form", list(URLS))
def test_the_queue_is_read_where_kombu_writes_it(server: RedisServer, form: str) -> None:
    template, db = URLS[form]
    url = template.format(secret=SECRET, port=server.port, tls_port=server.tls_port, ca=server.ca, socket=server.socket)
    assert url == Settings(REDIS_URL=url).REDIS_URL
    queue, job_id = f"lrcam-test-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    broker = Broker(url, queue=queue)
    try:
        broker.ping()
        assert broker.queued_ids() == set()
        broker.send_job(job_id, "train", {})
        assert broker.queued_ids() == {job_id}
        assert server.client(db).llen(queue) == 1  # the database the URL names, as kombu reads it
        assert PASSWORD not in broker.url
    finally:
        server.client(db).delete(queue)


def test_a_unix_url_is_refused_with_the_form_kombu_takes() -> None:
    with pytest.raises(ValidationError, match=r"redis\+socket:///path/to/redis.sock\?virtual_host=<db>"):
        Settings(REDIS_URL="unix:///run/redis/redis.sock?db=1")
