#!/bin/sh
# The original devd CARP hook that carphooks replaces, ported faithfully to POSIX sh
# for the benchmark (bench/event.py). devd runs it as:  original.sh VHID@IF MASTER|BACKUP
#
# It trusts the event (no re-read of the CARP state), adds the aliases without looking
# on MASTER, and on BACKUP forks `ifconfig | grep` once per address (a substring match:
# 203.0.113.1 also matches 203.0.113.10). The settings below are the script's constants;
# the benchmark may override them through the environment.
subsystem=$1
type=$2

IF=${ORIG_IF:-vtnet0}
SUBSYSTEM=${ORIG_SUBSYSTEM:-1@tap0}
A=${ORIG_ADDR4:-203.0.113.10}
P=${ORIG_PLEN4:-24}
B=${ORIG_ADDR6:-2001:db8:10::10}
Q=${ORIG_PLEN6:-64}
TAG=${ORIG_TAG:-carp-hook}

[ "$subsystem" = "$SUBSYSTEM" ] || exit 0

case "$type" in
MASTER)
	ifconfig $IF $A/$P alias
	ifconfig $IF inet6 $B/$Q alias
	logger -t "$TAG" "Assigned $A on $IF."
	;;
BACKUP)
	if ifconfig $IF | grep "$A" > /dev/null; then
		ifconfig $IF $A -alias
		logger -t "$TAG" "Removed $A from $IF."
	fi
	if ifconfig $IF | grep "$B" > /dev/null; then
		ifconfig $IF inet6 $B -alias
	fi
	;;
esac
exit 0
