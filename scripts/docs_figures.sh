#!/usr/bin/env bash
# Regenerate the figures of the documentation (docs/_static/figures/) from the benchmarks.
#
# Every figure on the method and benchmark pages is written by a benchmark script in its quick
# mode (see the READMEs under benchmarks/); this script runs those scripts into a scratch
# folder (results/docs_figures/, git-ignored, where their markdown reports with the numbers stay)
# and copies the PNGs they write. One CPU thread, so it is safe on a shared machine. The PNGs are
# committed; check that each stays below 300 kB.
#
#   scripts/docs_figures.sh            # linear theory (~15 s) + vision MLP (~4 min on 2 cores)
#   DOCS_FIGURES_VISION=0 scripts/docs_figures.sh   # linear theory only
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
DEST="docs/_static/figures"
WORK="${DOCS_FIGURES_WORK:-results/docs_figures}"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 MPLBACKEND=Agg

mkdir -p "$DEST" "$WORK/linear_theory" "$WORK/vision_mlp"

theory=benchmarks/general/linear_theory
# Tables 5/9 are not redrawn here: their two figures (tables_5_9_r2mae.png,
# tables_5_9_r2mae_map.png) come from the script's full run (about 40 minutes), see
# benchmarks/general/linear_theory/README.md.
for script in fig1a_isotropic fig1bcd_spiked fig1e_general fig1g_two_plateaus; do
    echo "== $theory/$script.py --quick"
    "$PYTHON" "$theory/$script.py" --quick --out "$WORK/linear_theory"
    cp "$WORK/linear_theory/$script.png" "$DEST/$script.png"
done

if [ "${DOCS_FIGURES_VISION:-1}" != "0" ]; then
    echo "== benchmarks/general/vision/mlp_masked_pixels.py --mode quick"
    "$PYTHON" benchmarks/general/vision/mlp_masked_pixels.py --mode quick \
        --out "$WORK/vision_mlp"
    cp "$WORK/vision_mlp/fig2a_probe_error.png" "$DEST/fig2a_probe_error.png"
    cp "$WORK/vision_mlp/fig2d_effective_rank.png" "$DEST/fig2d_effective_rank.png"
fi

ls -l "$DEST"
large=$(find "$DEST" -name '*.png' -size +300k)
if [ -n "$large" ]; then
    echo "figures over 300 kB: $large" >&2
    exit 1
fi
