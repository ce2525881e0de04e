#!/usr/bin/env python3
"""Writes the image fuzz target's seed corpus (corpus/image/): small docker-save and OCI
archives whose digests check out, so the fuzzer starts past the digest checks, and bare
layers with every entry type the extractor handles. Deterministic: rerun to regenerate."""
import gzip, hashlib, io, json, os, shutil, subprocess, tarfile

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "image")
MTIME = 1704067200
tarfile.RECORDSIZE = 1024  # no padding to 10 KiB: small seeds fuzz faster


def tar_bytes(entries, fmt=tarfile.GNU_FORMAT):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for e in entries:
            info = tarfile.TarInfo(e["name"])
            info.mtime = MTIME
            info.type = e.get("type", tarfile.REGTYPE)
            info.mode = e.get("mode", 0o644)
            info.linkname = e.get("link", "")
            info.pax_headers = e.get("pax", {})
            info.devmajor, info.devminor = e.get("dev", (0, 0))
            data = e.get("data", b"")
            info.size = len(data) if info.type == tarfile.REGTYPE else 0
            t.addfile(info, io.BytesIO(data) if info.size else None)
    return buf.getvalue()


def sha(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def layers():
    base = tar_bytes([
        {"name": "bin", "type": tarfile.DIRTYPE, "mode": 0o755},
        {"name": "bin/sh", "data": b"#!\n", "mode": 0o755},
        {"name": "etc/passwd", "data": b"root:x:0:0::/root:/bin/sh\n"},
        {"name": "d", "type": tarfile.DIRTYPE, "mode": 0o755},
        {"name": "d/old", "data": b"old"},
    ])
    top = tar_bytes([
        {"name": "d/.wh..wh..opq"},
        {"name": "etc/.wh.passwd"},
        {"name": "lib", "type": tarfile.SYMTYPE, "link": "usr/lib"},
        {"name": "bin/busybox", "data": b"bb", "mode": 0o755},
        {"name": "bin/ash", "type": tarfile.LNKTYPE, "link": "bin/busybox"},
        {"name": "run/fifo", "type": tarfile.FIFOTYPE},
        {"name": "dev/null", "type": tarfile.CHRTYPE, "dev": (1, 3), "mode": 0o666},
        {"name": "x", "data": b"x", "pax": {"SCHILY.xattr.user.k": "v"}},
    ], fmt=tarfile.PAX_FORMAT)
    return [base, top]


def config(diff_ids):
    return json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }, sort_keys=True).encode()


def docker_archive(compress):
    ls = layers()
    files = [(f"l{i}/layer.tar", gzip.compress(l, mtime=0) if compress else l)
             for i, l in enumerate(ls)]
    cfg = config([sha(l) for l in ls])
    manifest = [{"Config": "config.json", "RepoTags": ["seed:docker"],
                 "Layers": [n for n, _ in files]}]
    repos = {"seed": {"legacy": "l1"}}
    return tar_bytes([{"name": "config.json", "data": cfg}]
                     + [{"name": n, "data": d} for n, d in files]
                     + [{"name": "manifest.json", "data": json.dumps(manifest).encode()},
                        {"name": "repositories", "data": json.dumps(repos).encode()}])


def oci_archive():
    ls = layers()
    blobs = {}
    def add(b):
        blobs[sha(b)] = b
        return sha(b)
    layer_descs = [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": add(gzip.compress(l, mtime=0)), "size": len(gzip.compress(l, mtime=0))}
                   for l in ls]
    cfg = config([sha(l) for l in ls])
    manifest = json.dumps({"schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": add(cfg), "size": len(cfg)},
        "layers": layer_descs}).encode()
    nested = json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": add(manifest),
         "size": len(manifest), "platform": {"architecture": "amd64", "os": "linux"}}]}).encode()
    index = {"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha(manifest),
         "size": len(manifest), "annotations": {"io.containerd.image.name": "docker.io/library/seed:oci"}},
        {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": add(nested),
         "size": len(nested), "annotations": {"org.opencontainers.image.ref.name": "seed:multi"}}]}
    return tar_bytes([{"name": "oci-layout", "data": b'{"imageLayoutVersion":"1.0.0"}'},
                      {"name": "index.json", "data": json.dumps(index).encode()}]
                     + [{"name": "blobs/sha256/" + d[7:], "data": b} for d, b in sorted(blobs.items())])


def main():
    os.makedirs(OUT, exist_ok=True)
    base, top = layers()
    seeds = {
        "docker.tar": docker_archive(False),
        "docker-gzip-layers.tar": docker_archive(True),
        "oci.tar": oci_archive(),
        "oci.tar.gz": gzip.compress(oci_archive(), mtime=0),
        "layer-base.tar": base,
        "layer-top-pax.tar": top,
    }
    if shutil.which("zstd"):
        seeds["docker.tar.zst"] = subprocess.run(
            ["zstd", "-q", "-c", "--no-check"], input=seeds["docker.tar"],
            capture_output=True, check=True).stdout
    for name, data in seeds.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)


main()
