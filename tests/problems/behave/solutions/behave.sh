# The verdict matrix's program in bash (see tests/problems/README.md).
read -r mode a b
a=${a:-0}; b=${b:-0}
case "$mode" in
  sum) echo $((a + b)) ;;
  wrong) echo $((a + b + 1)) ;;
  trailing) printf '%d   \n\n\n' $((a + b)) ;;
  spin) while :; do :; done ;;
  threads) for i in 1 2 3; do (while :; do :; done) & done; while :; do :; done ;;
  sleep) sleep 100 ;;
  alloc) x=$(head -c 1000000 /dev/zero | tr '\0' x); while :; do x="$x$x"; done ;;
  flood) yes "flood flood flood flood flood flood flood flood" ;;
  crash) kill -SEGV $$ ;;
  exit) exit 4 ;;
esac
