#!/bin/bash
# For a shallow checkout (actions/checkout with fetch-depth: 1): fetch BASE (a tag,
# branch or commit) and deepen HEAD's history until BASE is an ancestor -- the commits
# the experiment turns into patches -- instead of the tree's whole history (Linux: over a
# million commits). Prints BASE's commit.
#   bash scripts/fetch-base.sh TREE BASE
set -euo pipefail
tree=$1 base=$2
git -C "$tree" fetch -q --no-tags --depth=1 origin "$base" >&2
base_sha=$(git -C "$tree" rev-parse --verify 'FETCH_HEAD^{commit}')
head_sha=$(git -C "$tree" rev-parse --verify 'HEAD^{commit}')
depth=64
until git -C "$tree" merge-base --is-ancestor "$base_sha" "$head_sha" 2>/dev/null; do
    if [ "$(git -C "$tree" rev-parse --is-shallow-repository)" = false ]; then
        echo "fetch-base: $base is not an ancestor of HEAD" >&2
        exit 1
    fi
    if [ "$depth" -gt 16384 ]; then
        git -C "$tree" fetch -q --no-tags --unshallow origin "$head_sha" >&2
    else
        git -C "$tree" fetch -q --no-tags --deepen="$depth" origin "$head_sha" >&2
        depth=$((depth * 2))
    fi
done
echo "$base_sha"
