#!/usr/bin/env bash
# Benchmark (not a test) of `vdi convert -O FORMAT` against the raw export and qemu-img.
#
# One generated image (gen_image.py, the main benchmark's generator with smaller numbers):
# 8 GiB virtual, 1 GiB of random data in scattered 1 MiB blocks, 64 allocated blocks of
# zeros, 16 ZERO entries. Every tool runs once per round, in turn, for --reps rounds; the
# output is deleted after each run. Printed per tool: the minimum and median wall time
# (/usr/bin/time: elapsed, user, system, max RSS), and the ratios the issue asks for:
#   - each uncompressed format's throughput against `vdi convert -O raw` (ratio of minima);
#   - `vdi convert -O vmdk-stream` against `qemu-img convert -O vmdk -o
#     subformat=streamOptimized` of the same image.
#
# usage: tests/bench/formats.sh [--reps N] [--out-dir DIR] [--image VDI] [--only TOOLS]
#   --reps N      rounds (default 7)
#   --out-dir DIR where outputs go (default target/bench; /dev/shm shows the tools' own
#                 cost rather than the kernel's writeback)
#   --image VDI   time this image instead of the generated one (e.g. real, compressible data)
#   --only TOOLS  comma-separated subset of: raw,qcow2,vmdk,vhd,vhd-fixed,vhdx,vmdk-stream,
#                 qemu-vmdk-stream
set -euo pipefail
export LC_ALL=C

REPS=7
OUT_DIR=
IMAGE=
ONLY=raw,qcow2,vmdk,vhd,vhd-fixed,vhdx,vmdk-stream,qemu-vmdk-stream
while (($#)); do
    case $1 in
        --reps) REPS=${2:?}; shift ;;
        --out-dir) OUT_DIR=${2:?}; shift ;;
        --image) IMAGE=${2:?}; shift ;;
        --only) ONLY=${2:?}; shift ;;
        *) echo "usage: $0 [--reps N] [--out-dir DIR] [--image VDI] [--only TOOLS]" >&2; exit 2 ;;
    esac
    shift
done

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
VDI=${VDI:-$ROOT/target/release/vdi}
DIR=$ROOT/target/bench
OUT_DIR=${OUT_DIR:-$DIR}
mkdir -p "$DIR" "$OUT_DIR"
IMG=${IMAGE:-$DIR/formats.vdi}
SAMPLES=$DIR/formats-samples.tsv
[[ -x $VDI ]] || { echo "bench: $VDI is missing: cargo build -p vdi-cli --release" >&2; exit 1; }

if [[ ! -f $IMG ]]; then
    "$VDI" create "$IMG.tmp" 8G >/dev/null
    python3 "$ROOT/tests/bench/gen_image.py" "$IMG.tmp" 1024 64 16 1
    qemu-img check -q "$IMG.tmp"
    mv "$IMG.tmp" "$IMG"
fi

OUT=$OUT_DIR/formats-out
declare -A CMD=(
    [raw]="$VDI convert -O raw $IMG $OUT"
    [qcow2]="$VDI convert -O qcow2 $IMG $OUT"
    [vmdk]="$VDI convert -O vmdk $IMG $OUT"
    [vhd]="$VDI convert -O vhd $IMG $OUT"
    [vhd-fixed]="$VDI convert -O vhd-fixed $IMG $OUT"
    [vhdx]="$VDI convert -O vhdx $IMG $OUT"
    [vmdk-stream]="$VDI convert -O vmdk-stream $IMG $OUT"
    [qemu-vmdk-stream]="qemu-img convert -f vdi -O vmdk -o subformat=streamOptimized $IMG $OUT"
)
IFS=, read -r -a TOOLS <<<"$ONLY"

: >"$SAMPLES"
for ((r = 1; r <= REPS; r++)); do
    for t in "${TOOLS[@]}"; do
        rm -f "$OUT"
        # shellcheck disable=SC2086
        s=$( { /usr/bin/time -f '%e %U %S %M' ${CMD[$t]} 2>&1 >/dev/null; } | grep -v '^vdi: note' | tail -1)
        size=$(stat -c %s "$OUT")
        printf '%s\t%s\t%s\n' "$t" "$s" "$size" >>"$SAMPLES"
    done
    echo "bench: round $r of $REPS done" >&2
done
rm -f "$OUT"

python3 - "$SAMPLES" <<'EOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    t, s, size = line.rstrip("\n").split("\t")
    e, u, k, m = s.split()
    rows.setdefault(t, []).append((float(e), float(u), float(k), int(m), int(size)))
mn = {t: min(r[0] for r in v) for t, v in rows.items()}
print(f"{'tool':<18}{'min s':>8}{'median s':>10}{'user':>7}{'sys':>7}{'RSS MiB':>9}{'output MiB':>12}")
for t, v in rows.items():
    best = min(v)
    print(f"{t:<18}{best[0]:>8.2f}{statistics.median(r[0] for r in v):>10.2f}{best[1]:>7.2f}{best[2]:>7.2f}"
          f"{best[3] / 1024:>9.0f}{best[4] / 2**20:>12.0f}")
print()
for t in ["qcow2", "vmdk", "vhd", "vhd-fixed", "vhdx"]:
    if "raw" in mn and t in mn:
        print(f"{t}: {mn['raw'] / mn[t] * 100:.0f} % of the raw export's throughput (ratio of minima)")
if "vmdk-stream" in mn and "qemu-vmdk-stream" in mn:
    r = rows["vmdk-stream"][0][4] / rows["qemu-vmdk-stream"][0][4]
    print(f"vmdk-stream: {mn['qemu-vmdk-stream'] / mn['vmdk-stream']:.2f}x qemu-img's speed (ratio of minima); "
          f"output {r:.2f}x the size of qemu-img's")
EOF
