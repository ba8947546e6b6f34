# A local apt repository (file:, nothing fetched) on a broker that offers rabbitmq-server at
# version $2 (Debian's form, e.g. 3.10.9-1) as a stand-in whose installation fails in its
# preinst, before dpkg replaces any file of the installed package. Arguments: add VERSION, or
# remove (the repository, its source line and apt's lists of it).
set -eu
repo=/srv/celery-test-repo
list=/etc/apt/sources.list.d/celery-test-repo.list
case "$1" in
add)
  version=$2
  deb="rabbitmq-server_${version}_all.deb"
  rm -rf "$repo"
  mkdir -p "$repo/build/DEBIAN"
  cat > "$repo/build/DEBIAN/control" <<CONTROL
Package: rabbitmq-server
Version: $version
Architecture: all
Maintainer: celery-lab tests <tests@example.invalid>
Description: stand-in whose installation fails (the tests' upgrade rescue)
CONTROL
  printf '#!/bin/sh\necho "stand-in rabbitmq-server: this package never installs" >&2\nexit 1\n' \
    > "$repo/build/DEBIAN/preinst"
  chmod 0755 "$repo/build/DEBIAN/preinst"
  dpkg-deb --root-owner-group --build "$repo/build" "$repo/$deb" > /dev/null
  {
    cat "$repo/build/DEBIAN/control"
    echo "Filename: ./$deb"
    echo "Size: $(stat -c %s "$repo/$deb")"
    echo "SHA256: $(sha256sum "$repo/$deb" | cut -d ' ' -f 1)"
    echo
  } > "$repo/Packages"
  {
    echo "Origin: celery-lab-tests"
    echo "Label: celery-lab-tests"
    echo "Date: $(date -u -R)"
    echo "SHA256:"
    echo " $(sha256sum "$repo/Packages" | cut -d ' ' -f 1) $(stat -c %s "$repo/Packages") Packages"
  } > "$repo/Release"
  echo "deb [trusted=yes] file:$repo ./" > "$list"
  ;;
remove)
  rm -rf "$repo" "$list" /var/lib/apt/lists/*celery-test-repo*
  ;;
esac
