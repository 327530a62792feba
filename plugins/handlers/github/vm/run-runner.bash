# Runs inside the job's VM: fed on standard input to `anka run <vm> bash -l -s`, after the
# exports of the run's environment (so neither the JIT config nor anything else sits on a
# command line). Installs the GitHub Actions runner unless the template caches one, verifies
# the download against the checksum the controller resolved, and runs it with the JIT config
# (ACTIONS_RUNNER_INPUT_JITCONFIG): the runner takes exactly one job and exits.
set -euo pipefail

RUNNER_HOME="${RUNNER_HOME:-$HOME/actions-runner}"

case "$(uname -m)" in
  arm64 | aarch64) arch=ARM64 ;;
  *) arch=X64 ;;
esac

if [ -x "$RUNNER_HOME/run.sh" ]; then
  echo "anklet: using the runner cached on the template in $RUNNER_HOME"
else
  url_var="ANKLET_RUNNER_URL_$arch"
  sha_var="ANKLET_RUNNER_SHA256_$arch"
  url="${!url_var:-}"
  sha="${!sha_var:-}"
  if [ -z "$url" ] || [ -z "$sha" ]; then
    echo "anklet: no runner cached in $RUNNER_HOME and no download for $arch was provided" >&2
    exit 96
  fi
  tarball="$(mktemp "${TMPDIR:-/tmp}/actions-runner.XXXXXX")"
  trap 'rm -f "$tarball"' EXIT
  curl --fail --silent --show-error --location --retry 3 --output "$tarball" "$url"
  actual="$(shasum -a 256 "$tarball" | cut -d ' ' -f 1)"
  if [ "$actual" != "$sha" ]; then
    echo "anklet: runner download checksum mismatch (expected $sha, got $actual)" >&2
    exit 97
  fi
  mkdir -p "$RUNNER_HOME"
  tar -xzf "$tarball" -C "$RUNNER_HOME"
  echo "anklet: runner installed in $RUNNER_HOME"
fi

: "${ACTIONS_RUNNER_INPUT_JITCONFIG:?the JIT runner configuration is missing}"
cd "$RUNNER_HOME"
exec ./run.sh
