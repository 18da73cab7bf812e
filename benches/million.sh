#!/usr/bin/env bash
# A million live leases on a three-node cluster (benches/million.rs):
#
#   bash benches/million.sh                                  # 1 000 000 leases, 10 000 sessions
#   bash benches/million.sh --leases 100000 --sessions 1000
#
# Builds the trexlock binary and the bench in release mode, runs it, and
# prints, last,
#   MILLION leases=N rss_mb=R snapshot_mb=S snapshot_ms=T restart_ms=U acquire_p50_us=V empty_p50_us=W
# The bench starts and kills its own node processes (by pid), on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo bench --bench million -- "$@"
