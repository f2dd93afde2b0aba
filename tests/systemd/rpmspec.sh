#!/bin/bash
# packaging/rpm/ccsync.spec parses with rpmspec -P, and every macro in it expands.
# Debian's rpm lacks Fedora's meson/systemd macros, so stand-ins with the same names and shapes are
# defined here: a misspelt macro stays unexpanded and fails the test. Skips (77) without rpmspec.
set -euo pipefail
spec=${1:?usage: rpmspec.sh SPEC}
command -v rpmspec >/dev/null || { echo "SKIP: rpmspec not installed (Debian package rpm)"; exit 77; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/macros" <<'MACROS'
%_vpath_builddir redhat-linux-build
%__meson /usr/bin/meson
%meson %{__meson} setup --buildtype=plain --prefix=%{_prefix} %{_vpath_builddir}
%meson_build %{__meson} compile -C %{_vpath_builddir} -j %{_smp_build_ncpus}
%meson_install DESTDIR=%{buildroot} %{__meson} install -C %{_vpath_builddir} --no-rebuild
%meson_test %{__meson} test -C %{_vpath_builddir} --print-errorlogs
%_unitdir /usr/lib/systemd/system
%_sysusersdir /usr/lib/sysusers.d
%_tmpfilesdir /usr/lib/tmpfiles.d
%_journalcatalogdir /usr/lib/systemd/catalog
%bash_completions_dir /usr/share/bash-completion/completions
%systemd_requires Requires(post): systemd
%sysusers_requires_compat Requires(pre): shadow-utils
%sysusers_create_compat() echo sysusers %1
%systemd_post() echo post %*
%systemd_preun() echo preun %*
%systemd_postun_with_restart() echo postun %*
%journal_catalog_update journalctl --update-catalog
MACROS

set +e
out=$(rpmspec -P --load="$tmp/macros" "$spec" 2>"$tmp/err")
rc=$?
set -e
if ((rc != 0)) || [[ -s $tmp/err ]]; then
	echo "rpmspec -P failed (rc=$rc):"
	cat "$tmp/err"
	exit 1
fi
# Section markers and file-list directives are the only % words allowed to remain.
left=$(echo "$out" | grep -v '^#' |
	grep -oE '%(\{[^}]*\}|[A-Za-z_][A-Za-z0-9_]*)' |
	grep -vxE '%(prep|build|install|check|pre|post|preun|postun|files|changelog|description|license|doc|dir|config|attr|ghost)' |
	sort -u || true)
if [[ -n $left ]]; then
	echo "unexpanded macros in $spec:"
	echo "$left"
	exit 1
fi
echo "rpmspec -P: $(basename "$spec") parses; $(echo "$out" | grep -c '') lines, every macro expanded"
