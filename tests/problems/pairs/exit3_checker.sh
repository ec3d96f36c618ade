# testlib's _fail: the checker itself says it failed (exit 3) -> IE.
echo "FAIL answer file is corrupt" >&2
exit 3
