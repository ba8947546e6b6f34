# All of a firewall zone's settings on a host, in force and saved (permanent), a line each.
# Argument: ZONE.
set -e
firewall-cmd --zone="$1" --list-all | sed 's/^/runtime /'
firewall-cmd --permanent --zone="$1" --list-all | sed 's/^/permanent /'
