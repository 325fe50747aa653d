# The test closure of trove's integration tests: a handful of store paths
# that reference each other and hold the shapes a NAR can take. Built from
# world-readable inputs with the host's /bin/sh (the sandbox is off):
#
#   nix-build tests/integration/closure.nix -A top
#
# bigSize: size of the large random file (head -c syntax); tools/demo uses a
# small one.
{ bigSize ? "300M" }:
let
  mk = name: script: derivation {
    inherit name;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-ec" script ];
    PATH = "/usr/bin:/bin";
    LC_ALL = "C";
  };
in rec {
  # A store path that is one regular file; 13 bytes (not a multiple of 8).
  file = mk "trove-test-file" ''
    printf 'hello, trove\n' > "$out"
  '';

  # A store path that is one symlink, absolute, into another store path.
  link = mk "trove-test-link" ''
    ln -s ${file} "$out"
  '';

  # A store path that is one empty regular file.
  empty = mk "trove-test-empty" ''
    : > "$out"
  '';

  # A large file of random content (spans many chunks), and a small
  # executable next to it.
  big = mk "trove-test-big" ''
    mkdir "$out"
    head -c ${bigSize} /dev/urandom > "$out/big.bin"
    printf '#!/bin/sh\necho big\n' > "$out/run"
    chmod +x "$out/run"
  '';

  # A directory tree with every shape the NAR tests care about.
  tree = mk "trove-test-tree" ''
    mkdir -p "$out/bin" "$out/share/doc" "$out/empty-dir" "$out/sizes" "$out/names"

    # Regular and executable files, an empty executable.
    printf '#!/bin/sh\necho trove\n' > "$out/bin/hello"
    chmod +x "$out/bin/hello"
    : > "$out/bin/empty-exe"
    chmod +x "$out/bin/empty-exe"
    printf 'documentation\n' > "$out/share/doc/README"

    # Sizes around the 8-byte padding boundary and a few larger ones.
    for n in 0 1 7 8 9 15 16 17 63 64 65 4095 4096 4097 65536 70001; do
      head -c "$n" /dev/urandom > "$out/sizes/f$n"
    done
    # A file of zeros that is a multiple of 8 long (padding looks like data).
    head -c 1024 /dev/zero > "$out/sizes/zeros"

    # Names: byte order is not locale order.
    for n in a a-b a.b a0 A B b Z _ "a b" '~' 'a!'; do
      printf '%s\n' "$n" > "$out/names/$n"
    done
    printf 'utf-8\n' > "$out/names/é ü 日本.txt"
    printf 'space\n' > "$out/names/ leading space"
    printf 'quote\n' > "$out/names/quote\"back\\slash"
    printf 'tab\n' > "$out/names/$(printf 'tab\there')"
    printf 'long\n' > "$out/names/$(head -c 255 /dev/zero | tr '\0' L)"
    mkdir "$out/names/dir.d" "$out/names/dir"
    : > "$out/names/dir/inside"

    # Empty directories, one nested in another.
    mkdir -p "$out/empty-dir/also-empty"

    # 60 levels of directories with a file at the bottom.
    d="$out/deep"
    i=0
    while [ "$i" -lt 60 ]; do d="$d/d$i"; i=$((i + 1)); done
    mkdir -p "$d"
    printf 'bottom\n' > "$d/leaf"

    # Symlinks: relative, to a directory, absolute into other store paths of
    # the closure, absolute and relative dangling, one with a long target.
    ln -s ../share/doc/README "$out/bin/readme"
    ln -s share/doc "$out/doc"
    ln -s ${file} "$out/to-file"
    ln -s ${big}/big.bin "$out/to-big"
    ln -s /nonexistent/trove-dangling "$out/dangling-abs"
    ln -s no-such-file "$out/dangling-rel"
    ln -s "$(head -c 1000 /dev/zero | tr '\0' x)" "$out/long-target"

    # A plain reference by content rather than by symlink.
    printf '%s\n' ${link} ${empty} > "$out/share/refs"
  '';

  # The root of the closure: references every other path.
  top = mk "trove-test-top" ''
    mkdir -p "$out/bin"
    printf '#!/bin/sh\nexec ${tree}/bin/hello "$@"\n' > "$out/bin/top"
    chmod +x "$out/bin/top"
    ln -s ${tree} "$out/tree"
  '';
}
