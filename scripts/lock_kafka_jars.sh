#!/usr/bin/env bash
# Regenerates fleet/stack/kafka-jars.txt (the pinned broker classpath with sha256) from
# scripts/kafka-jars/pom.xml. Needs Maven; users of `fleet up` do not (it fetches the pinned jars over HTTPS).
set -euo pipefail
cd "$(dirname "$0")/kafka-jars"
out="$(mktemp -d)"
mvn -q -B dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$out/libs"
mvn -q -B dependency:list -DincludeScope=runtime -DoutputFile="$out/deps.txt"
grep -E '^\s+\S+:\S+:jar:' "$out/deps.txt" | awk '{print $1}' | sort | while IFS=: read -r g a _ v _; do
  echo "$g:$a:$v $(sha256sum "$out/libs/$a-$v.jar" | cut -d' ' -f1)"
done > ../../fleet/stack/kafka-jars.txt
rm -rf "$out"
wc -l ../../fleet/stack/kafka-jars.txt
