# Helpers shared by the launchers (sourced): shell quoting, and running or printing (--dry_run) a command.

# Prints $1 quoted for a POSIX shell, as Python's shlex.quote does ('...' only where needed).
quote() {
  if [[ "$1" =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

# Prints the arguments as one command line that a shell reads back as the same arguments (an argument
# --name=value is written --name=<quoted value>, which a shell reads the same way).
command_line() {
  local line="" arg
  for arg in "$@"; do
    if [[ "$arg" =~ ^(--[A-Za-z0-9_.-]+=)(.*)$ ]]; then
      line+="${BASH_REMATCH[1]}$(quote "${BASH_REMATCH[2]}") "
    else
      line+="$(quote "$arg") "
    fi
  done
  printf '%s\n' "${line% }"
}

# Runs the command, or with DRY_RUN=1 prints it (command_line) instead.
run_or_print() {
  if [ "${DRY_RUN:-0}" -eq 1 ]; then
    command_line "$@"
  else
    "$@"
  fi
}
