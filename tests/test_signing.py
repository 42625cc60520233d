"""SPEC §10, signed repositories: tools/repoPackager.py signs the indexes it writes in the
signify/usign format (ed25519); once a node trusts a key (etc/pm/keys), pm refuses an
index that is unsigned, wrongly signed, signed by a key it does not trust, older than one
it already trusted (a replay) or, with require_fresh = yes, expired - keeping the index
it had - and a hostile mirror cannot get anything installed that the owner did not sign."""

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, exists, read, run_pm, snapshot, _repo_packager

SIGNIFY = shutil.which("signify-openbsd") or shutil.which("signify")
needs_signify = pytest.mark.skipif(SIGNIFY is None, reason="signify-openbsd is not installed "
                                   "(Debian package signify-openbsd)")
pytest.importorskip("cryptography", reason="the tests make keys and signatures with the cryptography package")

CACHE = "var/cache/pm/indexes"
INDEXES = ("index.msgpack.zst", "index.json")


def packager(*args, expect=0):
    code = _repo_packager().main([str(a) for a in args])
    assert code == expect
    return code


def make_key(directory, name="owner"):
    """A key pair written by repoPackager --generate-key: (public, secret) paths."""
    base = Path(directory) / name
    base.parent.mkdir(parents=True, exist_ok=True)
    packager("--generate-key", base)
    return Path(str(base) + ".pub"), Path(str(base) + ".sec")


def keynum(public):
    return base64.b64decode(Path(public).read_text().splitlines()[1])[2:10].hex()


def signed_repo(path, secret, *packages, extra=()):
    packager("-d", path, "--sign", secret, *extra, *packages)
    return Path(path)


def use(root, url, options=""):
    sources = Path(root) / "etc/pm/sources.list"
    sources.parent.mkdir(parents=True, exist_ok=True)
    sources.write_text("%s%s\n" % (options + " " if options else "", url))


def conf(root, text):
    path = Path(root) / "etc/pm/pm.conf"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def sign_with(secret, directory):
    """Re-sign the indexes of ``directory`` with another secret key (repoPackager's signer)."""
    key = _repo_packager().SecretKey(str(secret))
    for name in INDEXES:
        (Path(directory) / (name + ".sig")).write_bytes(key.sign((Path(directory) / name).read_bytes()))


def rewrite_index(directory, secret, **fields):
    """Rewrite both indexes of ``directory`` with ``fields`` changed, signed by ``secret``."""
    import msgpack
    import zstandard
    directory = Path(directory)
    document = json.loads((directory / "index.json").read_text())
    document.update(fields)
    (directory / "index.json").write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
    (directory / "index.msgpack.zst").write_bytes(zstandard.ZstdCompressor().compress(msgpack.packb(document)))
    sign_with(secret, directory)


@pytest.fixture
def node(tmp_path, root, build, serve):
    """A signed repository (hello 1.0) served over HTTP, its key trusted by the root,
    and its index fetched by pm update."""
    class Node:
        pass
    n = Node()
    n.public, n.secret = make_key(tmp_path / "keys")
    n.repo = signed_repo(tmp_path / "repo", n.secret, build("hello", "1.0", {"/usr/share/hello": "hello 1"}))
    n.server = serve(n.repo)
    n.keynum = keynum(n.public)
    assert run_pm(root, "key", "add", n.public).code == 0
    use(root, n.server.url)
    result = run_pm(root, "--json", "update")
    assert result.code == 0, result
    assert result.json["sources"][0]["signed_by"] == n.keynum and result.json["sources"][0]["serial"] == 1
    return n


def offered(root):
    result = run_pm(root, "--json", "search")
    assert result.code == 0, result
    return sorted((row["package"], row["version"]) for row in result.json["packages"])


# -- the key and signature formats ---------------------------------------------------------

def test_generated_keys_are_signify_keys_with_a_private_secret_key(tmp_path):
    public, secret = make_key(tmp_path)
    assert secret.stat().st_mode & 0o777 == 0o600
    lines = public.read_text().splitlines()
    assert len(lines) == 2 and lines[0].startswith("untrusted comment: ")
    raw = base64.b64decode(lines[1])
    assert len(raw) == 42 and raw[:2] == b"Ed"
    raw_secret = base64.b64decode(secret.read_text().splitlines()[1])
    assert len(raw_secret) == 104 and raw_secret[:4] == b"EdBK" and raw_secret[4:8] == bytes(4), \
        "unencrypted (0 KDF rounds), as signify -G -n writes"
    assert raw_secret[32:40] == raw[2:10] and raw_secret[72:] == raw[10:], "the same key number and public key"
    assert packager("--generate-key", tmp_path / "owner", expect=1), "an existing key is never overwritten"


@needs_signify
def test_indexes_signed_by_repoPackager_verify_with_signify_and_install_with_pm(tmp_path, root, build, pm):
    public, secret = make_key(tmp_path)
    repo = signed_repo(tmp_path / "repo", secret, build("hello", "1.0", {"/hello": "1"}))
    assert not (repo / "manifest.sig").exists(), "the OpenOS Lua index stays unsigned"
    for name in INDEXES:
        proc = subprocess.run([SIGNIFY, "-V", "-p", str(public), "-m", str(repo / name)],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    index = json.loads((repo / "index.json").read_text())
    assert index["serial"] == 1 and index["valid_until"].endswith("Z")
    pm("key", "add", public)
    use(root, repo)
    pm("install", "hello")
    assert read(root, "/hello") == "1"


@needs_signify
def test_an_index_signed_by_signify_with_its_own_key_is_accepted_by_pm(tmp_path, root, build, pm):
    keys = tmp_path / "keys"
    keys.mkdir()
    subprocess.run([SIGNIFY, "-G", "-n", "-c", "signify's key", "-p", str(keys / "s.pub"), "-s", str(keys / "s.sec")],
                   check=True)
    repo = tmp_path / "repo"
    packager("-d", repo, build("hello", "1.0", {"/hello": "1"}))
    subprocess.run([SIGNIFY, "-S", "-s", str(keys / "s.sec"), "-m", str(repo / "index.json")], check=True)
    pm("key", "add", keys / "s.pub")
    use(root, repo)
    result = pm("--json", "update")
    assert result.json["sources"][0]["signed_by"] == keynum(keys / "s.pub")
    pm("install", "hello")
    assert read(root, "/hello") == "1"
    # and repoPackager signs with the key signify generated
    packager("-d", repo, "--sign", keys / "s.sec", build("hello", "2.0", {"/hello": "2"}))
    subprocess.run([SIGNIFY, "-V", "-q", "-p", str(keys / "s.pub"), "-m", str(repo / "index.json")], check=True)
    pm("install", "hello")
    assert read(root, "/hello") == "2"


@needs_signify
def test_without_cryptography_pm_checks_signatures_with_the_signify_command(tmp_path, root, build, pm):
    public, secret = make_key(tmp_path)
    repo = signed_repo(tmp_path / "repo", secret, build("hello", "1.0", {"/hello": "1"}))
    fake = tmp_path / "no-cryptography" / "cryptography"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('cryptography is not installed here')\n")
    pm("key", "add", public)
    use(root, repo)
    tools = tmp_path / "bin"
    tools.mkdir()
    os.symlink(SIGNIFY, tools / "signify")
    env = {"PYTHONPATH": str(fake.parent), "PATH": str(tools)}
    pm("install", "hello", env=env)
    assert read(root, "/hello") == "1"
    (repo / "index.json.sig").write_bytes((repo / "index.msgpack.zst.sig").read_bytes())
    result = pm("update", env=dict(env, PATH=str(tmp_path / "empty")), expect=1)
    lines = [l for l in result.err.splitlines() if l.startswith("pm: error")]
    assert len(lines) == 1 and "cryptography" in lines[0]


@needs_signify
def test_without_cryptography_repoPackager_makes_keys_and_signs_with_the_signify_command(tmp_path, build):
    import sys
    fake = tmp_path / "no-cryptography" / "cryptography"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('cryptography is not installed here')\n")
    tools = tmp_path / "bin"
    tools.mkdir()
    os.symlink(SIGNIFY, tools / "signify")
    env = dict(os.environ, PYTHONPATH=str(fake.parent), PATH=str(tools))

    def run(*args):
        return subprocess.run([sys.executable, str(REPO / "tools/repoPackager.py")] + [str(a) for a in args],
                              capture_output=True, text=True, env=env)
    proc = run("--generate-key", tmp_path / "site")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "site.sec").stat().st_mode & 0o777 == 0o600
    proc = run("-d", tmp_path / "repo", "--sign", tmp_path / "site.sec", build("hello", "1.0", {"/hello": "1"}))
    assert proc.returncode == 0, proc.stderr
    for name in INDEXES:
        subprocess.run([SIGNIFY, "-V", "-q", "-p", str(tmp_path / "site.pub"), "-m", str(tmp_path / "repo" / name)],
                       check=True)
    env["PATH"] = str(tmp_path / "empty")
    proc = run("-d", tmp_path / "repo3", "--sign", tmp_path / "site.sec", build("y", "1.0", {"/y": "1"}))
    assert proc.returncode == 1 and "cryptography" in proc.stderr and not (tmp_path / "repo3/index.json").exists()


# -- trust on the node ---------------------------------------------------------------------

def test_key_add_list_remove_round_trip_with_json(tmp_path, root, pm):
    public, _ = make_key(tmp_path, "site")
    number = keynum(public)
    assert pm("--json", "key", "list").json["keys"] == []
    added = pm("--json", "key", "add", public).json
    assert added["added"] is True and added["key"]["keynum"] == number
    assert added["key"]["comment"] == "pm repository key site public key"
    stored = root / "etc/pm/keys/site.pub"
    assert stored.read_bytes() == public.read_bytes() and added["key"]["file"] == str(stored)
    assert pm("--json", "key", "add", public).json["added"] is False, "adding it again is a no-op"
    listed = pm("--json", "key", "list").json["keys"]
    assert listed == [{"keynum": number, "comment": "pm repository key site public key", "file": str(stored)}]
    assert number in pm("key", "list").out and str(stored) in pm("key", "list").out
    removed = pm("--json", "key", "remove", number.upper()).json["removed"]
    assert [k["keynum"] for k in removed] == [number] and not stored.exists()
    assert pm("--json", "key", "list").json["keys"] == []
    result = pm("--json", "key", "remove", number, expect=1)
    assert result.json["exit_code"] == 1 and "not trusted" in result.json["error"]


def test_a_file_that_is_not_a_public_key_is_refused(tmp_path, root, pm):
    bad = tmp_path / "bad.pub"
    bad.write_text("untrusted comment: x\nnot base64!\n")
    result = pm("key", "add", bad, expect=3)
    assert "bad.pub" in result.err and not exists(root, "/etc/pm/keys/bad.pub")
    _, secret = make_key(tmp_path)
    pm("key", "add", secret, expect=3)
    pm("key", "remove", "xyz", expect=2)


def test_signed_by_and_trusted_yes_together_are_a_usage_error(tmp_path, root, pm):
    use(root, tmp_path, "[signed-by=0123456789abcdef trusted=yes]")
    result = pm("update", expect=2)
    assert "sources.list line 1" in result.err


# -- refusals: nothing changed, the previous index kept ------------------------------------

def tamper_index(node, tmp_path, build):
    shutil.copy(node.repo / "index.msgpack.zst.sig", tmp_path / "kept.sig")
    shutil.copy(node.repo / "index.json.sig", tmp_path / "kept.json.sig")
    packager("-d", node.repo, build("evil", "1.0", {"/evil": "x"}))
    shutil.copy(tmp_path / "kept.sig", node.repo / "index.msgpack.zst.sig")
    shutil.copy(tmp_path / "kept.json.sig", node.repo / "index.json.sig")
    return "does not match"


def tamper_signature(node, tmp_path, build):
    for name in INDEXES:
        lines = (node.repo / (name + ".sig")).read_text().splitlines()
        raw = bytearray(base64.b64decode(lines[1]))
        raw[-1] ^= 1
        (node.repo / (name + ".sig")).write_text(lines[0] + "\n" + base64.b64encode(bytes(raw)).decode() + "\n")
    return "does not match"


def untrusted_key(node, tmp_path, build):
    _, other = make_key(tmp_path, "stranger")
    signed_repo(node.repo, other, build("evil", "1.0", {"/evil": "x"}))
    return "which is not trusted"


def missing_signature(node, tmp_path, build):
    packager("-d", node.repo, build("evil", "1.0", {"/evil": "x"}))
    assert not (node.repo / "index.msgpack.zst.sig").exists()
    return "has no signature"


def malformed_signature(node, tmp_path, build):
    for name in INDEXES:
        (node.repo / (name + ".sig")).write_text("untrusted comment: x\nRWQ=\n")
    return "malformed signature"


def replayed_older_index(node, tmp_path, build):
    shutil.copytree(node.repo, tmp_path / "serial-1")
    signed_repo(node.repo, node.secret, build("hello", "2.0", {"/usr/share/hello": "hello 2"}))
    assert run_pm(node.root, "update").code == 0
    assert ("hello", "2.0") in offered(node.root)
    shutil.rmtree(node.repo)
    shutil.copytree(tmp_path / "serial-1", node.repo)
    return "older than the one already trusted (serial 2): replay?"


def same_serial_other_content(node, tmp_path, build):
    rewrite_index(node.repo, node.secret, packages=[])
    return "like the one already trusted, but other contents"


def expired_with_require_fresh(node, tmp_path, build):
    conf(node.root, "require_fresh = yes\n")
    rewrite_index(node.repo, node.secret, serial=2, valid_until="2020-01-01T00:00:00Z", packages=[])
    return "expired"


@pytest.mark.parametrize("attack", [tamper_index, tamper_signature, untrusted_key, missing_signature,
                                    malformed_signature, replayed_older_index, same_serial_other_content,
                                    expired_with_require_fresh])
def test_a_bad_index_is_refused_with_nothing_changed_and_the_previous_index_kept(
        attack, node, tmp_path, root, build, pm):
    node.root = root
    why = attack(node, tmp_path, build)
    before_offer = offered(root)
    before = snapshot(root)
    result = pm("update", expect=3)
    errors = [l for l in result.err.splitlines() if l.startswith("pm: error:")]
    assert len(errors) == 1 and node.server.url in errors[0] and why in errors[0], result.err
    assert snapshot(root) == before, "nothing changed: the cache and the trust record are as they were"
    assert offered(root) == before_offer
    pm("install", "evil", expect=1)
    assert not exists(root, "/evil")


def test_a_replay_is_caught_after_the_cache_is_wiped(node, tmp_path, root, build, pm):
    shutil.copytree(node.repo, tmp_path / "serial-1")
    signed_repo(node.repo, node.secret, build("hello", "2.0", {"/usr/share/hello": "hello 2"}))
    pm("update")
    shutil.rmtree(root / "var/cache/pm")
    shutil.rmtree(node.repo)
    shutil.copytree(tmp_path / "serial-1", node.repo)
    result = pm("update", expect=3)
    assert "replay?" in result.err
    assert not exists(root, "/" + CACHE) or not os.listdir(root / CACHE)
    record = json.loads(next((root / "var/lib/pm/trust").iterdir()).read_text())
    assert record["serial"] == 2 and record["keynum"] == node.keynum


def test_a_poisoned_cache_is_not_used(node, root, build, pm):
    import msgpack
    cached = next((root / CACHE).iterdir())
    document = msgpack.unpackb(cached.read_bytes())
    evil = build("evil", "1.0", {"/evil": "x"})
    entry = dict(document["entries"][0], manifest=dict(document["entries"][0]["manifest"], package="evil"))
    document["entries"].append(entry)
    cached.write_bytes(msgpack.packb(document))
    result = pm("install", "evil", expect=1)
    assert "is not the one pm last accepted" in result.err and not exists(root, "/evil")
    assert evil.exists()
    pm("update")
    pm("install", "hello")


def test_the_same_index_again_is_accepted(node, root, pm):
    pm("update")
    pm("update")
    pm("install", "hello")


def test_an_expired_index_is_used_with_a_warning_naming_its_age(node, root, pm):
    rewrite_index(node.repo, node.secret, serial=2, valid_until="2020-01-01T00:00:00Z")
    result = pm("update")
    assert "expired" in result.err and "days ago" in result.err and "2020-01-01T00:00:00Z" in result.err
    pm("install", "hello")
    pm("uninstall", "hello")
    conf(root, "require_fresh = yes\n")
    result = pm("install", "hello", expect=1)
    assert "expired" in result.err, "require_fresh: a node frozen on an expired cached index stops using it"


def test_a_pinned_source_refuses_another_trusted_key(node, tmp_path, root, build, pm):
    other_public, other_secret = make_key(tmp_path, "other")
    pm("key", "add", other_public)
    use(root, node.server.url, "[signed-by=%s]" % node.keynum)
    pm("update")
    signed_repo(node.repo, other_secret, build("evil", "1.0", {"/evil": "x"}))
    before = snapshot(root)
    result = pm("update", expect=3)
    assert "pinned to key %s" % node.keynum in result.err
    assert snapshot(root) == before
    use(root, node.server.url, "[signed-by=%s]" % keynum(other_public))
    pm("update")
    assert ("evil", "1.0") in offered(root)


def test_a_pinned_source_is_checked_even_before_any_policy(tmp_path, root, build, pm):
    public, secret = make_key(tmp_path)
    repo = tmp_path / "repo"
    packager("-d", repo, build("hello", "1.0", {"/hello": "1"}))
    use(root, repo, "[signed-by=%s]" % keynum(public))
    result = pm("install", "hello", expect=3)
    assert "has no signature" in result.err and not exists(root, "/hello")
    sign_with(secret, repo)
    result = pm("install", "hello", expect=3)
    assert "which is not trusted" in result.err
    pm("key", "add", public)
    pm("install", "hello")


def test_require_signatures_no_turns_the_policy_off(tmp_path, root, build, pm):
    public, _ = make_key(tmp_path)
    repo = tmp_path / "repo"
    packager("-d", repo, build("hello", "1.0", {"/hello": "1"}))
    pm("key", "add", public)
    use(root, repo)
    pm("install", "hello", expect=3)
    conf(root, "require_signatures = no\n")
    pm("install", "hello")
    conf(root, "require_signatures = maybe\n")
    assert "require_signatures" in pm("update", expect=3).err


def test_require_signatures_yes_without_keys_refuses_unsigned_sources(tmp_path, root, build, pm):
    repo = tmp_path / "repo"
    packager("-d", repo, build("hello", "1.0", {"/hello": "1"}))
    use(root, repo)
    conf(root, "require_signatures = yes\n")
    assert "has no signature" in pm("install", "hello", expect=3).err


# -- a hostile mirror ----------------------------------------------------------------------

def test_a_hostile_mirror_cannot_get_its_package_installed_once_a_key_is_trusted(
        tmp_path, root, build, serve, pm):
    public, secret = make_key(tmp_path)
    mirror = tmp_path / "mirror"
    packager("-d", mirror, build("hello", "6.6.6", {"/usr/bin/hello": "#!/bin/sh\nrm -rf /\n"}))
    server = serve(mirror)
    use(root, server.url)
    pm("update")            # the node used the mirror before it trusted a key
    pm("key", "add", public)
    result = pm("install", "hello", expect=1)
    assert "was not signed by a key trusted now" in result.err
    result = pm("update", expect=3)
    assert "has no signature" in result.err
    pm("install", "hello", expect=1)
    assert not exists(root, "/usr/bin/hello")

    use(root, server.url, "[trusted=yes]")
    result = pm("update")
    assert "[trusted=yes]" in result.err and "without a signature check" in result.err
    result = pm("install", "hello")
    assert "without a signature check" in result.err, "a warning each time"
    assert exists(root, "/usr/bin/hello")
