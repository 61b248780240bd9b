# Find CPython interpreters by minor version: python3.X on PATH when it runs (pyenv's shims
# answer "command not found" for versions that are not selected), else pyenv's own copies.

_interpreters() {
  local minor
  for minor in 10 11 12 13 14 15; do
    if python3.$minor -V >/dev/null 2>&1; then echo "python3.$minor"; fi
  done
  if command -v pyenv >/dev/null 2>&1; then
    ls -d "$(pyenv root)"/versions/3.*/bin/python3 2>/dev/null || true
  fi
}

_version() { "$1" -c 'import sys; print("%d.%02d" % sys.version_info[:2])'; }

# The interpreter of version $1 (e.g. 3.10); fails loudly when the machine has none.
python_for() {
  local want candidate
  want=$(printf '%d.%02d' "${1%%.*}" "${1#*.}")
  for candidate in $(_interpreters); do
    if [ "$(_version "$candidate")" = "$want" ]; then echo "$candidate"; return 0; fi
  done
  echo "no Python $1 on this machine (install it, or pyenv install $1)" >&2
  return 1
}

# The newest CPython 3 interpreter the machine has.
newest_python() {
  local candidate best="" best_version=""
  for candidate in $(_interpreters) python3; do
    local version
    version=$(_version "$candidate") || continue
    if [[ "$version" > "$best_version" ]]; then best=$candidate best_version=$version; fi
  done
  echo "$best"
}
