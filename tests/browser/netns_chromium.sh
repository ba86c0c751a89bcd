#!/bin/sh
# Chromium in another network namespace, for Playwright's executablePath: relay_pages.mjs runs
# each page's browser in the namespace of its own "home" network. nsenter execs Chromium in
# place, so the pipes Playwright drives it through are inherited as they are.
#
# Environment: SWITCHYARD_NETNS, the namespace's path (e.g. /proc/PID/ns/net); CHROMIUM, the
# browser (default /usr/bin/chromium).
set -eu
exec nsenter --net="$SWITCHYARD_NETNS" -- "${CHROMIUM:-/usr/bin/chromium}" "$@"
