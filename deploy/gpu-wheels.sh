#!/usr/bin/env bash
# `make gpu-wheels`: on a machine with PyPI, fetch into .whl/ the wheels a bare GPU
# machine lacks for `make bench-gpu` (its python3 has CUDA torch, numba, pyarrow, fsspec,
# tokenizers and pytest). Versions come from constraints.txt. The Ray wheel is slimmed to
# what a Ray-core job uses (no Java jars, dashboard front end, RLlib, Data, Serve, Tune,
# Train or LLM libraries: half its size), so that the wheels and the working tree fit the
# device tool's 64 MiB transfer. s3fs and its botocore stack (16 MiB) are left out: the
# benchmark reads and writes local paths, and s3:// is tested on CPU against moto.
set -euo pipefail
cd "$(dirname "$0")/.."
PYVER=${PYVER:-3.12}
DEST=${DEST:-.whl}
# ray and what its core needs beyond that image; zstandard for .jsonl.zst shards.
NAMES="ray zstandard jsonschema jsonschema-specifications referencing rpds-py"
pins=()
for n in $NAMES; do
  pin=$(grep -iE "^${n}==" constraints.txt) || { echo "gpu-wheels: $n is not pinned in constraints.txt" >&2; exit 2; }
  pins+=("$pin")
done
rm -rf "$DEST" && mkdir -p "$DEST"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d "$DEST" "${pins[@]}"
python3 - "$DEST" <<'EOF'
import csv, io, pathlib, sys, zipfile

dest = pathlib.Path(sys.argv[1])
for whl in dest.glob("ray-*.whl"):
    unused = ("jars", "dashboard/client", "rllib", "data", "serve", "tune", "train", "llm")
    drop = lambda name: any(name.startswith(f"ray/{d}/") for d in unused)
    slim = whl.with_suffix(".slim")
    with zipfile.ZipFile(whl) as src, zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as out:
        for info in src.infolist():
            if drop(info.filename):
                continue
            data = src.read(info)
            if info.filename.endswith(".dist-info/RECORD"):  # keep RECORD true to the contents
                rows = [r for r in csv.reader(io.StringIO(data.decode())) if r and not drop(r[0])]
                buf = io.StringIO()
                csv.writer(buf, lineterminator="\n").writerows(rows)
                data = buf.getvalue().encode()
            out.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
    slim.replace(whl)
total = sum(p.stat().st_size for p in dest.glob("*.whl"))
print(f"gpu-wheels: {len(list(dest.glob('*.whl')))} wheels, {total / 2**20:.1f} MiB in {dest}/")
if total > 48 * 2**20:
    sys.exit("gpu-wheels: over 48 MiB; the device transfer allows 64 MiB with the working tree")
EOF
