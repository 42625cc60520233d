# greet NAME: print a greeting using the configured salutation
greet() {
    salutation=${GREET_SALUTATION:-Hello}
    printf '%s, %s!\n' "$salutation" "$1"
}
