#!/usr/bin/env bash
# NVIDIA's LibTorch backend (libtriton_pytorch.so) for the bundled tritonserver: built from source once, cached in
# ~/.cache/tei-export, reused afterwards (a few seconds). Sourced by scripts/env.sh after the virtualenv is ready.
# Offline machines of this project find the sources in ../shared/vendor/triton-r24.10; elsewhere
# $TEI_EXPORT_BACKEND_SOURCE names them, else `tei-export backend build` clones them with git.
# When it cannot be built, serve, verify and the tests use tei-export's compatibility backend, and this says why;
# under CI with the sources at hand, a failed build fails the set-up instead.
vendor="$ROOT/../shared/vendor/triton-r24.10"
if [ -z "${TEI_EXPORT_BACKEND_SOURCE:-}" ] && [ -d "$vendor" ]; then
  TEI_EXPORT_BACKEND_SOURCE="$(cd "$vendor" && pwd)"
  export TEI_EXPORT_BACKEND_SOURCE
fi

_backend_fallback() {
  if [ "${CI:-}" = "true" ] && [ -n "${TEI_EXPORT_BACKEND_SOURCE:-}" ]; then
    echo "error: CI: NVIDIA's LibTorch backend could not be built from $TEI_EXPORT_BACKEND_SOURCE: $1" >&2
    exit 1
  fi
  echo "[set-up] NVIDIA's LibTorch backend is not built ($1); serve, verify, bench and the tests use tei-export's" \
       "compatibility backend instead" >&2
}

# Debian packages, installed when this user may: what the build needs (headers and sources only), and jemalloc,
# which every tritonserver tei-export starts preloads (glibc's malloc lets its memory creep under ragged load;
# TEI_EXPORT_ALLOCATOR=system skips it).
_need_debs=()
[ -f /usr/share/cmake/RapidJSON/RapidJSONConfig.cmake ] || [ -n "${RapidJSON_DIR:-}" ] || _need_debs+=(rapidjson-dev)
[ -f /usr/src/googletest/CMakeLists.txt ] || [ -n "${TEI_EXPORT_GOOGLETEST_SOURCE:-}" ] || _need_debs+=(googletest)
if [ "${TEI_EXPORT_ALLOCATOR:-jemalloc}" = "jemalloc" ] && ! ls /usr/lib/*-linux-gnu/libjemalloc.so.2 >/dev/null 2>&1
then
  _need_debs+=(libjemalloc2)
fi
if [ "${#_need_debs[@]}" -gt 0 ] && command -v apt-get >/dev/null; then
  _sudo=""
  if [ "$(id -u)" != 0 ]; then _sudo="sudo -n"; fi
  if [ -z "$_sudo" ] || sudo -n true 2>/dev/null; then
    echo "[set-up] installing ${_need_debs[*]} (Debian) for NVIDIA's LibTorch backend and its servers" >&2
    $_sudo apt-get install -y -q --no-install-recommends "${_need_debs[@]}" >/dev/null 2>&1 \
      || { $_sudo apt-get update -q >/dev/null 2>&1 \
           && $_sudo apt-get install -y -q --no-install-recommends "${_need_debs[@]}" >/dev/null 2>&1; } \
      || echo "[set-up] apt-get could not install ${_need_debs[*]}" >&2
  fi
fi

if [ "${TEI_EXPORT_BUILD_BACKEND:-1}" = "0" ]; then
  _backend_fallback "TEI_EXPORT_BUILD_BACKEND=0"
else
  echo "[set-up] NVIDIA's LibTorch backend for the bundled tritonserver (built once, about a minute; then cached)" >&2
  _log="$(mktemp)"
  if "$VENV/bin/tei-export" backend build 2>&1 | tee "$_log" | sed -u 's/^/         /' >&2; then
    :
  else
    _backend_fallback "$(grep -E '^error:' "$_log" | tail -1 | cut -c1-600)"
  fi
  rm -f "$_log"
fi

# The newest pytorch_backend (branch main) beside the release one, so the tests check exports on the oldest and the
# newest backend with one server (`--backend nvidia:main`). Called by the test command only; its sources come from
# $TEI_EXPORT_NEWEST_BACKEND_SOURCE, else the newest ../shared/vendor/triton-main-* folder; without them the newest
# backend's tests skip, saying why (under CI with the sources at hand, a failed build fails the set-up).
build_newest_backend() {
  if [ -z "${TEI_EXPORT_NEWEST_BACKEND_SOURCE:-}" ]; then
    local newest
    newest="$(ls -d "$ROOT"/../shared/vendor/triton-main-* 2>/dev/null | sort | tail -1 || true)"
    [ -n "$newest" ] || return 0
    TEI_EXPORT_NEWEST_BACKEND_SOURCE="$(cd "$newest" && pwd)"
    export TEI_EXPORT_NEWEST_BACKEND_SOURCE
  fi
  [ "${TEI_EXPORT_BUILD_BACKEND:-1}" != "0" ] || return 0
  echo "[set-up] NVIDIA's newest LibTorch backend (branch main, for the tests; built once, a few minutes; then cached)" >&2
  local log
  log="$(mktemp)"
  if ! "$VENV/bin/tei-export" backend build --branch main --source "$TEI_EXPORT_NEWEST_BACKEND_SOURCE" 2>&1 \
      | tee "$log" | sed -u 's/^/         /' >&2; then
    local why
    why="$(grep -E '^error:' "$log" | tail -1 | cut -c1-600)"
    if [ "${CI:-}" = "true" ]; then
      echo "error: CI: NVIDIA's newest backend could not be built from $TEI_EXPORT_NEWEST_BACKEND_SOURCE: $why" >&2
      rm -f "$log"
      exit 1
    fi
    echo "[set-up] NVIDIA's newest backend is not built ($why); its tests skip" >&2
  fi
  rm -f "$log"
}
