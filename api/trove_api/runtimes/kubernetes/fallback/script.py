"""The ``sh`` script behind the agentless file fallback: POSIX sh, coreutils and findutils only
(snapshots: GNU tar as well, as trove-agent uses it).

Run as ``sh -c SCRIPT trove-files OP ROOT ARGS...`` in a fresh pod exec. It resolves each path
the way the agent does (``realpath``, refused outside the root), then works relative to the
physically entered directory, checking where that really is. Errors are one stderr line
``trove:<code>:<message>`` (the agent's codes) and exit status 3; exit 4 means an upload aborted.
"""

SCRIPT = r"""# Trove's file operations without trove-agent: POSIX sh, coreutils, findutils (GNU or busybox).
# $1 op, $2 namespace root, then the op's arguments. Errors: "trove:<code>:<message>" on stderr, exit 3.
set -u
umask 022
LC_ALL=C
export LC_ALL
fail() {
  printf 'trove:%s:%s\n' "$1" "${2-}" >&2
  exit 3
}

op=$1
ROOT=$(cd -P -- "$2" && pwd -P) || fail io_error "the namespace root $2 is missing"
shift 2

# Map a failed tool's message to the agent's error codes (its errno table, as text).
oserr() {
  case $1 in
    *"No such file"*) fail path_not_found "$1" ;;
    *"Not a directory"*) fail not_a_directory "$1" ;;
    *"Is a directory"*) fail is_a_directory "$1" ;;
    *"symbolic links"* | *"name too long"*) fail path_rejected "$1" ;;
    *"No space left"* | *"quota exceeded"*) fail storage_full "$1" ;;
    *"File too large"*) fail payload_too_large "$1" ;;
  esac
  fail io_error "$1"
}

inside() {
  case $1 in "$ROOT" | "$ROOT"/*) return 0 ;; esac
  return 1
}

# R := os.path.realpath($1) for an absolute $1, component by component as Python does it: not
# strict (missing parts are appended as they are), ".." after a symlink applies to its target.
# After 40 links it stops there, the rest unresolved: LOOPED=1, LAST=1 if that link was last.
resolve() {
  todo=${1#/}
  R=
  LOOPED=
  links=0
  while [ -n "$todo" ]; do
    case $todo in
    */*) c=${todo%%/*} todo=${todo#*/} ;;
    *) c=$todo todo= ;;
    esac
    case $c in
    '' | .) continue ;;
    ..) R=${R%/*} && continue ;;
    esac
    if [ -L "$R/$c" ] && [ "$links" -lt 40 ]; then
      links=$((links + 1))
      t=$(readlink -- "$R/$c" && echo x) || fail path_rejected "cannot be resolved"
      t=${t%?x}
      case $t in /*) R= ;; esac
      todo=$t${todo:+/$todo}
      todo=${todo#/}
    elif [ -L "$R/$c" ]; then
      LOOPED=1
      LAST=${todo:-1}
      [ "$LAST" = 1 ] || LAST=
      R=$R/$c${todo:+/$todo}
      return
    else
      R=$R/$c
    fi
  done
  [ -n "$R" ] || R=/
}

# The real path of the namespace-relative $1, refused if it leaves the root. The agent walks it
# with O_NOFOLLOW: a looping link is no directory, and only as the last part (with $2) allowed.
real() {
  R=$ROOT
  LOOPED=
  [ -n "$1" ] || return 0
  resolve "$ROOT/$1"
  inside "$R" || fail path_rejected "resolves outside the namespace"
  [ -z "$LOOPED" ] || { [ -n "$LAST" ] && [ -n "${2-}" ]; } || fail not_a_directory
}

# Fail for a path that does not exist: ENOTDIR if an ancestor is not a directory, else ENOENT.
absent() {
  p=${1%/*}
  while [ -n "$p" ] && [ ! -e "$p" ]; do p=${p%/*}; done
  [ -z "$p" ] || [ -d "$p" ] || fail not_a_directory
  fail path_not_found
}

# cd into the directory $1 and check where that really is.
enter() {
  [ -e "$1" ] || absent "$1"
  [ -d "$1" ] || fail not_a_directory
  cd -P -- "$1" || fail io_error "cannot enter the directory"
  here=$(pwd -P && echo x)
  inside "${here%?x}" || fail path_rejected "resolves outside the namespace"
}

gnu_find() { find / -maxdepth 0 -printf '' >/dev/null 2>&1; }

# S, T := size and mtime (seconds, maybe fractional) of $1, following symlinks.
meta() {
  if [ -n "$gnu" ]; then
    m=$(find -L "$1" -maxdepth 0 -printf '%s %T@') || fail io_error "cannot stat"
  else
    m=$(stat -L -c '%s %Y' -- "$1") || fail io_error "cannot stat"
  fi
  S=${m% *}
  T=${m#* }
}

# Snapshots need what trove-agent uses: GNU tar (busybox tar lacks --null and --format=gnu).
gnu_tar() {
  case $(tar --version 2>/dev/null) in
  *GNU*) ;;
  *) fail io_error "snapshots without trove-agent need GNU tar in the sandbox image" ;;
  esac
}

case $op in
write) # REL TEMPNAME MAX_BYTES; stdin: "<n>\n" + n bytes, ..., then "end\n" (anything else aborts)
  real "$1" last-may-loop
  tmp=$2
  max=$3
  [ "$R" != "$ROOT" ] || fail is_a_directory
  last=${R##*/}
  err=$(mkdir -p -- "${R%/*}" 2>&1) || {
    case $err in *"File exists"*) fail not_a_directory ;; esac
    oserr "$err"
  }
  enter "${R%/*}"
  [ ! -d "$last" ] || fail is_a_directory
  trap 'rm -f -- "$tmp"' EXIT
  trap 'exit 4' HUP INT TERM PIPE
  err=$(set -C && { : >"$tmp"; } 2>&1) || oserr "$err"
  echo ready
  total=0
  n=
  while IFS= read -r n; do
    case $n in
    end) break ;;
    '' | *[!0-9]*) exit 4 ;;
    esac
    total=$((total + n))
    [ "$total" -le "$max" ] || fail payload_too_large
    err=$(head -c "$n" 2>&1 >>"$tmp") || oserr "$err"
  done
  [ "$n" = end ] || exit 4
  [ ! -d "$last" ] || fail is_a_directory
  # Acknowledged means durable: the data before the rename, the rename before the answer
  # (sync FILE fsyncs it with coreutils; a sync without that option flushes everything).
  sync -- "$tmp" 2>/dev/null || sync
  # rename() replaces the name itself; -T (GNU, newer busybox) also when a directory appeared there.
  mv -fT -- "$tmp" "$last" 2>/dev/null || {
    [ ! -d "$last" ] || fail is_a_directory
    err=$(mv -f -- "$tmp" "$last" 2>&1) || oserr "$err"
  }
  sync -- . 2>/dev/null || sync
  trap - EXIT
  echo "done $total"
  # Uploads cut off by a killed shell leave hidden temp files; drop old ones.
  find . -maxdepth 1 -name '.trove-upload-*' -mmin +60 -exec rm -f -- {} + 2>/dev/null
  exit 0
  ;;
open) # REL; then stdin lines "<start> <count>": "<n>\n" + exactly n bytes each (n < count: shrank)
  real "$1" last-may-loop
  [ -z "$LOOPED" ] || fail path_rejected "is a symlink loop"
  [ "$R" != "$ROOT" ] || fail is_a_directory
  [ -e "$R" ] || absent "$R"
  [ ! -d "$R" ] || fail is_a_directory
  [ -f "$R" ] || fail is_a_directory "not a regular file"
  [ -r "$R" ] || fail io_error "Permission denied"
  exec 3<"$R"
  # What was opened, not what the name meant a moment ago.
  fd=/proc/$$/fd/3
  opened=$(readlink -- "$fd" && echo x)
  inside "${opened%?x}" || fail path_rejected "resolves outside the namespace"
  [ -f "$fd" ] || fail is_a_directory "not a regular file"
  gnu=
  ! gnu_find || gnu=1
  meta "$fd"
  echo "ok $S $T"
  while read -r start count; do
    case $start$count in '' | *[!0-9]*) exit 0 ;; esac
    meta "$fd"
    n=$((S - start))
    [ "$n" -ge 0 ] || n=0
    [ "$n" -le "$count" ] || n=$count
    echo "$n"
    # Exactly n bytes even if the file shrinks meanwhile (zeros then), so the framing holds.
    { tail -c "+$((start + 1))" "$fd" 2>/dev/null | head -c "$n"; head -c "$n" /dev/zero; } | head -c "$n"
  done
  exit 0
  ;;
list) # REL NBYTES; stdin: NBYTES of NUL-terminated directories (relative, "./...") to list
  real "$1"
  enter "$R"
  [ -r . ] && [ -x . ] || fail io_error "Permission denied"
  # One record per entry: directory listed, type, size, mtime, name; each field NUL-terminated.
  if gnu_find; then
    lister='exec find "$@" -mindepth 1 -maxdepth 1 -printf "%H\0%y\0%s\0%T@\0%f\0"'
  else
    lister='for d; do for f in "$d"/* "$d"/.[!.]* "$d"/..?*; do
      [ -e "$f" ] || [ -L "$f" ] || continue
      if [ -L "$f" ]; then t=l; elif [ -d "$f" ]; then t=d; else t=f; fi
      m=$(stat -c "%s %Y" -- "$f") || continue
      printf "%s\0%s\0%s\0%s\0%s\0" "$d" "$t" "${m% *}" "${m#* }" "${f##*/}"
    done; done'
  fi
  head -c "$2" | xargs -0 sh -c "$lister" trove-list
  exit 0
  ;;
delete) # REL
  # As the agent: the parent resolved, the last name as it is (a symlink there is the link
  # itself, wherever it points); only the result must be inside.
  R=$ROOT
  LOOPED=
  case $1 in */*) resolve "$ROOT/${1%/*}" ;; esac
  dir=$R
  looped=$LOOPED
  last=${1##*/}
  target=${dir%/}/$last
  inside "$target" || fail path_rejected "resolves outside the namespace"
  [ "$target" != "$ROOT" ] || fail root_delete_refused
  [ -z "$looped" ] || fail not_a_directory
  enter "$dir"
  [ -e "./$last" ] || [ -L "./$last" ] || fail path_not_found
  if [ -d "./$last" ] && [ ! -L "./$last" ]; then
    err=$(rm -rf -- "./$last" 2>&1) || oserr "$err"
  else
    err=$(rm -f -- "./$last" 2>&1) || oserr "$err"
  fi
  echo deleted
  exit 0
  ;;
export) # stdout: a gzip tar of the root's entries, as trove-agent makes it (GNU tar)
  enter "$ROOT"
  gnu_tar
  exec 3>&1
  # Top-level names, not ".": members read "a/b.txt" as in the other runtimes' tarballs.
  err=$(
    for f in * .[!.]* ..?*; do
      [ -e "$f" ] || [ -L "$f" ] || continue
      case $f in .trove-upload-*) continue ;; esac
      printf '%s\0' "$f"
    done | tar --format=gnu -czf - --null --files-from=- 2>&1 >&3
  ) && code=0 || code=$?
  exec 3>&-
  # GNU tar exits 1 when a file changed while it was read: the archive is still valid.
  [ "$code" -le 1 ] || fail io_error "tar failed ($code): $err"
  exit 0
  ;;
import) # TOKEN; stdin: "<n>\n" + n bytes of gzip tar, ..., then "end\n"; extracted beside, then swapped in
  enter "$ROOT"
  gnu_tar
  staging=.trove-restore-$1
  old=.trove-old-$1
  pipe=$staging.fifo
  errs=$staging.err
  err=$(mkdir -m 700 -- "$staging" 2>&1) || oserr "$err"
  trap 'rm -rf -- "$staging" "$pipe" "$errs"' EXIT
  trap 'exit 4' HUP INT TERM
  err=$(mkfifo -m 600 -- "$pipe" 2>&1) || oserr "$err"
  tar -xzf - -C "$staging" --no-same-owner --delay-directory-restore <"$pipe" 2>"$errs" &
  tarpid=$!
  exec 4>"$pipe"
  echo ready
  n=
  while IFS= read -r n; do
    case $n in
    end) break ;;
    '' | *[!0-9]*) break ;;
    esac
    head -c "$n" >&4 2>/dev/null || break # tar stopped early: its status says why
  done
  exec 4>&-
  wait "$tarpid" || fail snapshot_corrupt "tar could not extract it: $(head -c 500 -- "$errs")"
  [ "$n" = end ] || exit 4
  # tar does not fsync: the tree goes to disk before the swap (sync -f: that filesystem only).
  sync -f -- "$staging" 2>/dev/null || sync
  # As trove-agent: the root is a mount point and cannot be renamed, so its entries move, the
  # old ones aside first, then the new ones in; the old ones are deleted last.
  err=$(mkdir -m 700 -- "$old" 2>&1) || oserr "$err"
  for f in * .[!.]* ..?*; do
    [ -e "$f" ] || [ -L "$f" ] || continue
    case $f in "$staging" | "$old" | "$pipe" | "$errs") continue ;; esac
    err=$(mv -- "$f" "$old/" 2>&1) || oserr "$err"
  done
  cd "$staging" || fail io_error "the restore's staging directory vanished"
  for f in * .[!.]* ..?*; do
    [ -e "$f" ] || [ -L "$f" ] || continue
    err=$(mv -- "$f" ../ 2>&1) || oserr "$err"
  done
  cd .. || fail io_error "the namespace root vanished"
  sync -f -- . 2>/dev/null || sync
  trap - EXIT
  rmdir -- "$staging"
  rm -f -- "$pipe" "$errs"
  rm -rf -- "$old"
  echo done
  exit 0
  ;;
esac
fail bad_request "unknown operation $op"
"""
