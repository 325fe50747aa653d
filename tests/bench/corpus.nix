# Benchmark corpus for tests/bench/run, built from files already on the
# machine (Debian 12): real ELF programs and shared libraries, a Python
# interpreter with its standard library, many small files and some large ones.
#
#   nix-build corpus.nix -A top --argstr scale full --argstr version 1
#
# scale: "full" (~650 MB of NAR) or "smoke" (~70 MB).
# version: "2" is the "next version" a dependency bump produces: core (the
# shared libraries every program is linked against) gets a new store path and
# one changed file, so python and tools are rebuilt with the new path written
# into every ELF (interpreter and RPATH), and five stdlib files change. Big
# libraries, headers and Python packages stay the same.
# Needs sandbox = false and build-users-group = (reads /usr, /lib).
{ scale ? "full", version ? "1" }:
let
  full = scale == "full";
  mk = name: script: derivation {
    inherit name;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-ec" script ];
    PATH = "/usr/bin:/bin";
  };
  # The programs copied into tools: a handful the benchmark runs, and in
  # full also ELF files of /usr/bin in name order (each under 30 MB) up to
  # 150 MB.
  fixedBins = ''
    for p in sort wc sha256sum gzip tar grep sed cat ls; do echo /usr/bin/$p; done
  '';
  selectBins = fixedBins + (if full then ''
    total=0
    for f in /usr/bin/*; do
      [ -f "$f" ] && [ ! -L "$f" ] && [ ! -u "$f" ] && [ ! -g "$f" ] || continue
      [ "$(head -c 4 "$f" | tail -c 3)" = ELF ] || continue
      s=$(stat -c %s "$f")
      [ "$s" -lt 31457280 ] || continue
      total=$((total + s))
      [ "$total" -lt 157286400 ] || break
      echo "$f"
    done
  '' else "");
in rec {
  # Every shared library the programs and Python's extension modules load,
  # with the loader itself.
  core = mk "bench-core-${version}" ''
    mkdir -p $out/lib
    { ${selectBins}
      echo /usr/bin/python3.11
      ls /usr/lib/python3.11/lib-dynload/*.so; } > $TMPDIR/objs
    while read -r f; do ldd "$f" 2>/dev/null || true; done < $TMPDIR/objs |
      awk '$2 == "=>" && $3 ~ /^\// { print $3 }' | sort -u > $TMPDIR/libs
    while read -r l; do cp -L "$l" $out/lib/; done < $TMPDIR/libs
    cp -L /lib64/ld-linux-x86-64.so.2 $out/lib/
    echo "bench core version ${version}" > $out/VERSION
  '';
  # Large libraries nothing here links against (data for the closure).
  big = mk "bench-big" ''
    mkdir -p $out/lib
    ${if full then ''
      for l in libLLVM-15.so.1 libclang-14.so.14.0.6 libicudata.so.72.1 libz3.so.4 libx265.so.199; do
        cp -L /usr/lib/x86_64-linux-gnu/$l $out/lib/
      done'' else ''
      cp -L /usr/lib/x86_64-linux-gnu/libcrypto.so.3 $out/lib/''}
  '';
  # The interpreter, patched to load from core, with its standard library
  # next to it (it finds lib/python3.11 from its own location).
  python = mk "bench-python" ''
    mkdir -p $out/bin $out/lib
    cp /usr/bin/python3.11 $out/bin/python3
    chmod u+w $out/bin/python3
    patchelf --set-interpreter ${core}/lib/ld-linux-x86-64.so.2 \
      --force-rpath --set-rpath ${core}/lib $out/bin/python3
    cp -r /usr/lib/python3.11 $out/lib/
    rm -rf $out/lib/python3.11/__pycache__ $out/lib/python3.11/*/__pycache__
    ${if version != "1" then ''
      for m in json/__init__.py string.py textwrap.py argparse.py shutil.py; do
        chmod u+w $out/lib/python3.11/$m
        echo "# bench next version ${version}" >> $out/lib/python3.11/$m
      done'' else ""}
  '';
  tools = mk "bench-tools" ''
    mkdir -p $out/bin
    { ${selectBins} } | sort -u > $TMPDIR/bins
    while read -r f; do
      b=$out/bin/$(basename "$f")
      cp "$f" "$b"
      chmod u+w "$b"
      patchelf --set-interpreter ${core}/lib/ld-linux-x86-64.so.2 \
        --force-rpath --set-rpath ${core}/lib "$b" 2>/dev/null || cp "$f" "$b"
    done < $TMPDIR/bins
  '';
  # Many small files.
  headers = mk "bench-headers" ''
    ${if full then "cp -r /usr/include $out" else "mkdir -p $out; cp -r /usr/include/linux $out/"}
  '';
  pypkgs = mk "bench-pypkgs" ''
    mkdir -p $out
    ${if full then "cp -r /usr/lib/python3/dist-packages $out/" else "cp -r /usr/lib/python3.11/json $out/"}
    find $out -name __pycache__ -prune -exec rm -rf {} +
  '';
  top = mk "bench-corpus" ''
    mkdir -p $out/bin
    cat > $out/bin/run-python <<EOF
    #!/bin/sh
    exec ${python}/bin/python3 "\$@"
    EOF
    chmod +x $out/bin/run-python
    printf '%s\n' ${core} ${big} ${python} ${tools} ${headers} ${pypkgs} > $out/parts
  '';
}
