#!/usr/bin/env bash
# Compact benchmark (issue 4; a benchmark, not a test): `vdi compact` of an 8 GiB dynamic
# image whose allocated blocks are half zero, next to `qemu-img convert -O vdi` (which
# writes a compacted copy) in the same run.
#
# Usually run as `cargo xtask bench --compact [ARGS]`, which builds `vdi` in release mode
# first. Everything lives in target/bench/ (compact-*): the generated image, the scratch
# copies, the samples (compact-samples.tsv) and the table (compact-results.txt).
set -euo pipefail
export LC_ALL=C

usage() {
    cat <<'EOF'
usage: tests/bench/compact.sh [--reps N] [--keep]

  --reps N   samples per command, alternating the commands (default 3); the table shows
             the best sample. Each in-place compact runs on a fresh copy of the image
             (copied and synced before the clock starts).
  --keep     keep the generated image (3 GiB) for the next run; without it, it is deleted
             at the end. A kept image is reused only when its recorded parameters match.
EOF
}

REPS=3
KEEP=0
while (($#)); do
    case $1 in
        --reps) REPS=${2:?--reps needs a number}; shift ;;
        --keep) KEEP=1 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
    shift
done
[[ $REPS =~ ^[1-9][0-9]*$ ]] || { echo "compact: --reps must be a positive number" >&2; exit 2; }
die() { echo "compact: $*" >&2; exit 1; }

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
VDI=${VDI:-$ROOT/target/release/vdi}
DIR=$ROOT/target/bench
mkdir -p "$DIR"
IMG=$DIR/compact-src.vdi     # the generated image (never modified by the timed commands)
RAW=$DIR/compact-src.raw     # its data as a sparse raw file (generation only)
WORK=$DIR/compact-work.vdi   # fresh copy of IMG, compacted in place
OUT=$DIR/compact-out.vdi     # the compacted copies written by qemu-img / vdi convert
PARAMS=$DIR/compact.params
SAMPLES=$DIR/compact-samples.tsv
RESULTS=$DIR/compact-results.txt

# The generated data. Changing any of these (or the generator) makes a kept image stale.
SIZE=$((8 << 30))            # 8 GiB virtual disk, 8192 blocks of 1 MiB
BS=$((1 << 20))
DATA_BLOCKS=3072             # 3 GiB allocated, at random positions, stored in disk order
ZERO_BLOCKS=$((DATA_BLOCKS / 2))   # every other allocated block (in file order) overwritten with zeros
SEED=4

# --- tools -------------------------------------------------------------------------------
apt_install() {
    echo "compact: installing $* with apt-get" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
command -v qemu-img >/dev/null || apt_install qemu-utils
[[ -x /usr/bin/time ]] || apt_install time
command -v python3 >/dev/null || apt_install python3
[[ -x $VDI ]] || die "$VDI is missing: run \`cargo build -p vdi-cli --release\` (or use \`cargo xtask bench --compact\`)"
QEMU_VERSION=$(qemu-img --version | head -1)

json_field() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
allocated() { "$VDI" info --json "$1" | python3 -c 'import json, sys; print(json.load(sys.stdin)["format-specific"]["data"]["blocks-allocated"])'; }
file_len() { stat -c %s "$1"; }
disk_use() { echo $(($(stat -c %b "$1") * 512)); }   # bytes actually allocated on the host

free_kib() {
    local avail
    avail=$(df -Pk "$DIR" | awk 'NR == 2 { print $4 }')
    ((avail > $1)) || die "need $(($1 >> 20)) GiB free in $DIR, have $((avail >> 20)) GiB"
}

# --- the generated image -----------------------------------------------------------------
want_params() {
    echo "generator=1 size=$SIZE data=$DATA_BLOCKS zero=$ZERO_BLOCKS seed=$SEED" \
        "script_sha=$(sed -n '/^# --- the generated image/,/^# --- end of generator/p' "$0" | sha256sum | cut -c1-16)"
}

generate() {
    if [[ -f $PARAMS && -f $IMG && $(cat "$PARAMS") == "$(want_params)" ]]; then
        echo "compact: reusing $IMG (kept by an earlier --keep run with the same parameters)"
        return
    fi
    rm -f "$PARAMS" "$IMG" "$IMG.tmp" "$RAW"
    free_kib $((DATA_BLOCKS * 1024 * 2 + (1 << 20)))
    echo "compact: generating $IMG: 8 GiB, $DATA_BLOCKS random 1 MiB blocks at random positions, then $ZERO_BLOCKS of them zeroed"
    # 1. A sparse 8 GiB raw disk with random data in DATA_BLOCKS blocks at random positions.
    python3 - "$RAW" "$SIZE" "$BS" "$DATA_BLOCKS" "$SEED" >"$DIR/compact-positions" <<'PY'
import os, random, sys
path, size, bs, n, seed = sys.argv[1], *map(int, sys.argv[2:6])
positions = sorted(random.Random(seed).sample(range(size // bs), n))
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
for p in positions:
    os.pwrite(fd, os.urandom(bs), p * bs)
os.ftruncate(fd, size)
os.close(fd)
print("\n".join(map(str, positions)))
PY
    # 2. Imported by vdi: one slot per data block, in disk order.
    "$VDI" convert -O vdi "$RAW" "$IMG.tmp" >/dev/null
    rm -f "$RAW"
    [[ $(allocated "$IMG.tmp") == "$DATA_BLOCKS" ]] || die "the import did not allocate $DATA_BLOCKS blocks"
    # 3. Every other allocated block (file order = disk order) overwritten in place with a
    #    block of zeros: the block stays allocated, it now holds only zeros.
    head -c "$BS" /dev/zero >"$DIR/compact-zero"
    awk 'NR % 2 == 0' "$DIR/compact-positions" | while read -r p; do
        "$VDI" write --offset $((p * BS)) "$IMG.tmp" "$DIR/compact-zero" >/dev/null
    done
    rm -f "$DIR/compact-zero" "$DIR/compact-positions"
    [[ $(allocated "$IMG.tmp") == "$DATA_BLOCKS" ]] || die "writing zeros changed the number of allocated blocks"
    "$VDI" check "$IMG.tmp" >/dev/null || die "vdi check does not find the generated image clean"
    qemu-img check -f vdi "$IMG.tmp" >/dev/null || die "qemu-img check does not find the generated image clean"
    mv "$IMG.tmp" "$IMG"
    sync "$IMG"
    want_params >"$PARAMS"
}
# --- end of generator

cleanup() {
    rm -f "$WORK" "$OUT" "$DIR/compact-rss" "$DIR/compact-stdout" "$DIR/compact-stderr" \
        "$IMG.tmp" "$RAW" "$DIR/compact-zero" "$DIR/compact-positions"
    if ((!KEEP)); then rm -f "$IMG" "$PARAMS"; fi
}
trap cleanup EXIT

# --- the commands ------------------------------------------------------------------------
# cmd TOOL sets CMD (the timed command) and prepares its input/output (not timed).
cmd() {
    case $1 in
        vdi) CMD=("$VDI" compact --json "$WORK") ;;
        vdi-free) CMD=("$VDI" compact --free --json "$WORK") ;;
        # qemu-img convert's default cache mode is unsafe: it returns with the output still
        # in the page cache. With -t writeback it ends with an fdatasync, as vdi compact does.
        qemu) CMD=(qemu-img convert -f vdi -O vdi "$IMG" "$OUT") ;;
        qemu-wb) CMD=(qemu-img convert -t writeback -f vdi -O vdi "$IMG" "$OUT") ;;
        vdi-convert) CMD=("$VDI" convert -O vdi "$IMG" "$OUT") ;;
        *) die "no command for $1" ;;
    esac
}
prepare() {
    rm -f "$WORK" "$OUT"
    case $1 in
        vdi | vdi-free)
            # A fresh copy, its writeback finished, so the timed compact does not pay for it.
            # Dense like the source: --sparse=always would turn the zero blocks into holes,
            # which are not what a guest that wrote zeros leaves behind (and read differently).
            cp --sparse=never "$IMG" "$WORK"
            sync "$WORK" ;;
    esac
}
result_file() { case $1 in vdi | vdi-free) echo "$WORK" ;; *) echo "$OUT" ;; esac; }

declare -A BEST CPU RSS ALL AFTER DISK_AFTER DISK_FROM
# Verify a result (untimed): clean for qemu-img check, same content as the source, exactly
# the non-zero blocks left allocated, and (compact) the counts it reports.
verify() {
    local tool=$1 f n
    f=$(result_file "$tool")
    qemu-img check -f vdi "$f" >/dev/null || die "$tool: qemu-img check does not find $f clean"
    qemu-img compare -q -f vdi -F vdi "$IMG" "$f" || die "$tool: $f does not read as $IMG"
    n=$(allocated "$f")
    ((n == DATA_BLOCKS - ZERO_BLOCKS)) || die "$tool: $n blocks left allocated, expected $((DATA_BLOCKS - ZERO_BLOCKS))"
    case $tool in
        vdi | vdi-free)
            n=$(json_field blocks-zeroed <"$DIR/compact-stdout")
            ((n == ZERO_BLOCKS)) || die "$tool: $n blocks zeroed, expected $ZERO_BLOCKS"
            n=$(json_field file-length-after <"$DIR/compact-stdout")
            ((n == $(file_len "$f"))) || die "$tool: reports a length of $n, the file has $(file_len "$f")" ;;
    esac
    AFTER[$tool]=$(file_len "$f")
    DISK_AFTER[$tool]=$(disk_use "$f")
}

# sample TOOL: run once; wall time (µs), CPU time (user + system, µs), peak RSS (KiB).
sample() {
    local tool=$1 t0 t1 rc=0 us rss cpu
    cmd "$tool"
    prepare "$tool"
    # Host blocks of what the command starts from: the copy for compact (cp fills in
    # what the source leaves sparse around its header), the source for convert.
    case $tool in vdi | vdi-free) DISK_FROM[$tool]=$(disk_use "$WORK") ;; *) DISK_FROM[$tool]=$(disk_use "$IMG") ;; esac
    t0=$EPOCHREALTIME
    /usr/bin/time -f '%M %U %S' -o "$DIR/compact-rss" "${CMD[@]}" >"$DIR/compact-stdout" 2>"$DIR/compact-stderr" || rc=$?
    t1=$EPOCHREALTIME
    if ((rc)); then
        cat "$DIR/compact-stderr" >&2
        die "$tool failed with exit code $rc: ${CMD[*]}"
    fi
    us=$((10#${t1/./} - 10#${t0/./}))
    read -r rss cpu < <(tail -n 1 "$DIR/compact-rss" | awk '{ printf "%d %d\n", $1, ($2 + $3) * 1e6 }')
    verify "$tool"
    printf '%s\t%d\t%d\t%d\t%d\n' "$tool" "$us" "$cpu" "$rss" "${AFTER[$tool]}" >>"$SAMPLES"
    ALL[$tool]+="$(fmt_s "$us") "
    if [[ -z ${BEST[$tool]:-} ]] || ((us < ${BEST[$tool]})); then BEST[$tool]=$us; fi
    if [[ -z ${CPU[$tool]:-} ]] || ((cpu < ${CPU[$tool]})); then CPU[$tool]=$cpu; fi
    if [[ -z ${RSS[$tool]:-} ]] || ((rss > ${RSS[$tool]})); then RSS[$tool]=$rss; fi
}

# --- the table -----------------------------------------------------------------------------
fmt_s() { awk -v us="$1" 'BEGIN { if (us < 1e6) printf "%.1fms", us / 1e3; else printf "%.2fs", us / 1e6 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else printf "-" }'; }
fmt_mib() { awk -v b="$1" 'BEGIN { printf "%.1fMiB", b / 1048576 }'; }

# --- run -----------------------------------------------------------------------------------
free_kib $((DATA_BLOCKS * 1024 * 5 / 2 + (1 << 20)))   # image, a copy, an output, slack
generate
: >"$SAMPLES"
START=$(date '+%F %T')
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
BEFORE=$(file_len "$IMG")
DISK_BEFORE=$(disk_use "$IMG")
cat "$IMG" >/dev/null   # warm the page cache (the copies are warm too: cp just wrote them)
TOOLS=(vdi qemu vdi-free qemu-wb vdi-convert)
for ((r = 1; r <= REPS; r++)); do
    order=("${TOOLS[@]}")
    if ((r % 2 == 0)); then order=(); for t in "${TOOLS[@]}"; do order=("$t" "${order[@]}"); done; fi
    for t in "${order[@]}"; do
        echo "compact: round $r/$REPS: $t" >&2
        sample "$t"
    done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

ROW_FMT='%-40s %8s %8s %9s %10s %10s %10s %10s %7s %7s %7s\n'
row() {
    local label=$1 tool=$2
    printf "$ROW_FMT" "$label" "$(fmt_s "${BEST[$tool]}")" "$(fmt_s "${CPU[$tool]}")" \
        "$(fmt_mib $((RSS[$tool] * 1024)))" "$(fmt_mib "${AFTER[$tool]}")" \
        "$(fmt_mib $((BEFORE - AFTER[$tool])))" "$(fmt_mib "${DISK_AFTER[$tool]}")" \
        "$(fmt_mib $((DISK_FROM[$tool] - DISK_AFTER[$tool])))" \
        "$(ratio "${BEST[qemu]}" "${BEST[$tool]}")" "$(ratio "${BEST[qemu-wb]}" "${BEST[$tool]}")" \
        "$(ratio "${CPU[qemu]}" "${CPU[$tool]}")"
}
{
    echo "compact: vdi vs qemu-img, $START, $(nproc) cores, load $LOAD_BEFORE before, $LOAD_AFTER after"
    echo "vdi: $("$VDI" --version) ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')); $QEMU_VERSION"
    echo "image: 8 GiB dynamic, 1 MiB blocks, $DATA_BLOCKS allocated at random positions (imported by vdi, in disk"
    echo "order), every other one then overwritten with zeros in place ($ZERO_BLOCKS all-zero blocks still allocated);"
    echo "file $(fmt_mib "$BEFORE") ($(fmt_mib "$DISK_BEFORE") on disk); best of $REPS; page cache warm (caches not dropped);"
    echo "every result checked: qemu-img check clean, qemu-img compare equal to the source, $((DATA_BLOCKS - ZERO_BLOCKS)) blocks allocated"
    echo
    printf "$ROW_FMT" operation wall CPU "peak RSS" "size" "reclaimed" "on disk" "freed" "ratio" "ratio-wb" "CPU rat"
    row "vdi compact (in place, ZERO entries)" vdi
    row "vdi compact --free (in place)" vdi-free
    row "qemu-img convert -O vdi (copy)" qemu
    row "qemu-img convert -t writeback (copy)" qemu-wb
    row "vdi convert -O vdi (copy, reference)" vdi-convert
    echo
    echo "wall, CPU (user + system): best sample; size = file length after; reclaimed = length before - after;"
    echo "on disk / freed: host blocks used after / before - after; ratio = time of plain qemu-img convert / this"
    echo "time, ratio-wb = time of qemu-img convert -t writeback / this time (higher: faster than qemu-img);"
    echo "CPU rat = CPU time of plain qemu-img / this CPU time. vdi compact and qemu-img -t writeback end with an"
    echo "fdatasync of their output; plain qemu-img convert (cache mode unsafe) and vdi convert leave it in the page"
    echo "cache. The copies leave the source in place: their \"reclaimed\" is the size difference, the disk space"
    echo "needed while they run is source + copy."
    echo "all samples (wall, seconds):"
    for k in "${TOOLS[@]}"; do printf '  %-12s %s\n' "$k" "${ALL[$k]}"; done
} | tee "$RESULTS"
echo "compact: table saved in $RESULTS" >&2
