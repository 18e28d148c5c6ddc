#!/bin/bash
# The README's first command, idle then beside one spinning process; each in a fresh MEDNF_HOME.
set -u
for cond in idle loaded; do
  home=/tmp/fr_$cond; rm -rf $home; mkdir -p $home
  spinner=""
  if [ $cond = loaded ]; then python -c "while True: pass" & spinner=$!; sleep 1; fi
  start=$(date +%s.%N)
  MEDNF_HOME=$home /usr/bin/time -f "%e s wall, %U s user, %S s sys" mednf build phantomnf > $home.log 2>&1
  end=$(date +%s.%N)
  [ -n "$spinner" ] && kill $spinner
  echo "$cond: $(tail -1 $home.log) ; $(grep -o 'done: .*' $home.log | tail -1)"
  grep -o "cpu (x86_64, [0-9]* threads)" $home.log | head -1
done
