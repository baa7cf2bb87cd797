# Sourced by check-exports.sh and update-exports.sh: prints the sorted list of
# symbols that the shared library $1 defines in its dynamic symbol table
# (version suffixes such as @@V1 dropped).
saga_list_exports() {
    nm -D --defined-only "$1" | awk 'NF >= 3 { print $3 }' | sed 's/@.*//' |
        LC_ALL=C sort -u
}
