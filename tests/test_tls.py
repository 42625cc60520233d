"""SPEC §10: `https://` sources are verified - the certificate chain against the system's
CAs or the bundle of `ca = PATH` (pm.conf) or `--ca PATH`, and the host name - and a
certificate error is one line naming the host and the reason (exit 1), never a silent
fallback to no verification.  A real TLS server on 127.0.0.1, certificates made here."""

import datetime
import ipaddress
import ssl
from pathlib import Path

import pytest

from conftest import exists, read

pytest.importorskip("cryptography", reason="the tests make their certificates with the cryptography package")

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

NOW = datetime.datetime.now(datetime.timezone.utc)
DAY = datetime.timedelta(days=1)


class Authority:
    """A certificate authority that issues server certificates."""

    def __init__(self, name):
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.name = subject
        self.cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(NOW - DAY).not_valid_after(NOW + 30 * DAY)
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                                  content_commitment=False, key_encipherment=False,
                                                  data_encipherment=False, key_agreement=False,
                                                  encipher_only=False, decipher_only=False), critical=True)
                     .sign(self.key, hashes.SHA256()))

    def pem(self, path):
        Path(path).write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        return Path(path)

    def issue(self, directory, hosts=("127.0.0.1",), not_before=None, not_after=None):
        """A server certificate and key for ``hosts`` (IP addresses or DNS names),
        written to DIRECTORY/server.pem and server.key."""
        key = ec.generate_private_key(ec.SECP256R1())
        names = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
                .issuer_name(self.name).public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(not_before or NOW - DAY).not_valid_after(not_after or NOW + 30 * DAY)
                .add_extension(x509.SubjectAlternativeName(names), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .sign(self.key, hashes.SHA256()))
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (directory / "server.key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        return directory / "server.pem", directory / "server.key"


@pytest.fixture
def tls_serve(serve):
    """``tls_serve(directory, cert, key)``: a RepositoryServer speaking TLS; its ``url`` is https."""
    def start(directory, cert, key):
        server = serve(directory)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(cert), str(key))
        server.httpd.socket = context.wrap_socket(server.httpd.socket, server_side=True)
        server.https_url = "https://127.0.0.1:%d" % server.httpd.server_address[1]
        return server
    return start


@pytest.fixture
def site(tmp_path, build, repository):
    """A repository with one package and a CA."""
    repo = repository().add(build("hello", "1.0", {"/hello": "1"}))
    return repo, Authority("pm test CA")


def use(root, url):
    sources = Path(root) / "etc/pm/sources.list"
    sources.parent.mkdir(parents=True, exist_ok=True)
    sources.write_text(url + "\n")


def one_error(result):
    errors = [l for l in result.err.splitlines() if l.startswith("pm: error:")]
    assert len(errors) == 1, result.err
    return errors[0]


def test_a_certificate_from_the_ca_in_pm_conf_is_accepted_and_the_package_installs(
        tmp_path, root, pm, site, tls_serve):
    repo, ca = site
    server = tls_serve(repo.path, *ca.issue(tmp_path / "cert"))
    ca.pem(root / "ca.pem")
    (root / "etc/pm").mkdir(parents=True)
    (root / "etc/pm/pm.conf").write_text("ca = /ca.pem\n")
    use(root, server.https_url)
    assert "1 package" in pm("update").out
    pm("install", "hello")
    assert read(root, "/hello") == "1"
    assert server.fetched("hello-1.0.tar"), "the package came over TLS as well"


def test_the_ca_option_names_a_bundle_on_the_host(tmp_path, root, pm, site, tls_serve):
    repo, ca = site
    server = tls_serve(repo.path, *ca.issue(tmp_path / "cert"))
    bundle = ca.pem(tmp_path / "bundle.pem")
    use(root, server.https_url)
    pm("--ca", bundle, "update")
    pm("install", "--ca", bundle, "hello")
    assert exists(root, "/hello")


def test_without_the_ca_the_system_cas_refuse_the_certificate(tmp_path, root, pm, site, tls_serve):
    repo, ca = site
    server = tls_serve(repo.path, *ca.issue(tmp_path / "cert"))
    use(root, server.https_url)
    error = one_error(pm("update", expect=1))
    assert "TLS certificate of 127.0.0.1 is not trusted" in error
    assert not exists(root, "/var/cache/pm/indexes") or not list((root / "var/cache/pm/indexes").iterdir())


def test_a_wrong_host_name_is_refused(tmp_path, root, pm, site, tls_serve):
    repo, ca = site
    server = tls_serve(repo.path, *ca.issue(tmp_path / "cert", hosts=("mirror.example.org",)))
    bundle = ca.pem(tmp_path / "bundle.pem")
    use(root, server.https_url)
    error = one_error(pm("--ca", bundle, "update", expect=1))
    assert "127.0.0.1" in error and "mismatch" in error.lower(), error


def test_a_certificate_from_an_untrusted_ca_is_refused(tmp_path, root, pm, site, tls_serve):
    repo, ca = site
    stranger = Authority("someone else's CA")
    server = tls_serve(repo.path, *stranger.issue(tmp_path / "cert"))
    bundle = ca.pem(tmp_path / "bundle.pem")
    use(root, server.https_url)
    error = one_error(pm("--ca", bundle, "update", expect=1))
    assert "127.0.0.1" in error and "unable to get local issuer certificate" in error, error


def test_an_expired_certificate_is_refused(tmp_path, root, pm, site, tls_serve):
    repo, ca = site
    server = tls_serve(repo.path, *ca.issue(tmp_path / "cert", not_before=NOW - 60 * DAY, not_after=NOW - DAY))
    bundle = ca.pem(tmp_path / "bundle.pem")
    use(root, server.https_url)
    error = one_error(pm("--ca", bundle, "update", expect=1))
    assert "127.0.0.1" in error and "expired" in error, error


def test_a_ca_bundle_that_cannot_be_read_is_an_error_not_a_fallback(tmp_path, root, pm, site, tls_serve):
    repo, ca = site
    server = tls_serve(repo.path, *ca.issue(tmp_path / "cert"))
    use(root, server.https_url)
    error = one_error(pm("--ca", tmp_path / "missing.pem", "update", expect=1))
    assert "missing.pem" in error
    assert not server.fetched("index.msgpack.zst")
