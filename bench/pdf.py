"""`python -m bench.pdf [--json] [--n N] [--memory-n N]`: PDF certificates per second, first and warm.

Every certificate is for a different credential (tests/factories.py, plus a recipient name; one in ten names is
Arabic, one in ten Chinese, one in ten accented Latin), so the QR code, the text and the embedded credential
differ each time and nothing is answered from a cache. Figures:
- first: a fresh process (3 of them, median): importing the module, the first PDF (which imports WeasyPrint and
  builds the shared font configuration and stylesheets), the second PDF;
- warm: one process pinned to one CPU, median of 5 passes over N certificates;
- both cores: two such processes, one per CPU, started together;
- memory: resident set size before and after `--memory-n` more certificates in the warm process.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any

from issuer.delivery.pdf import render_certificate
from tests.factories import make_credential

# n % 10: 0-6 plain Latin, 7 accented Latin, 8 Arabic, 9 Chinese
_NAMES = ("Ada Lovelace", "Grace Hopper", "Alan Turing", "Katherine Johnson", "Edsger Dijkstra", "Barbara Liskov",
          "Donald Knuth", "Zoë Ångström-Núñez", "فاطمة الزهراء", "王小明")  # fmt: skip


def credential(n: int) -> dict[str, Any]:
    """Credential `n` with a recipient name and a proof, as the service stores it."""
    doc = make_credential(n)
    name = _NAMES[n % 10]
    doc["credentialSubject"]["identifier"].append(
        {"type": "IdentityObject", "identityType": "name", "hashed": False, "identityHash": f"{name} {n}"}
    )
    doc["proof"] = [
        {
            "type": "DataIntegrityProof",
            "cryptosuite": "eddsa-rdfc-2022",
            "created": doc["validFrom"],
            "verificationMethod": "did:web:badges.example.edu#ed25519-1",
            "proofPurpose": "assertionMethod",
            "proofValue": "z" + "3" * 87,
        }
    ]
    return doc


def render(n: int) -> bytes:
    return render_certificate(credential(n), verify_url=f"https://badges.example.edu/c/{n:08d}-{n * 7919:08x}")


def _rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _pin(cpu: int = 0) -> None:
    """Run on one CPU only (not the inherited set: the parent has already pinned itself to the first)."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu % (os.cpu_count() or 1)})


_FIRST = """
import json, time
t0 = time.perf_counter()
import bench.pdf as b
t1 = time.perf_counter(); b.render(10**6)
t2 = time.perf_counter(); b.render(10**6 + 1)
t3 = time.perf_counter()
print(json.dumps([t1 - t0, t2 - t1, t3 - t2]))
"""


def first_figures() -> dict[str, float]:
    runs = []
    for _ in range(3):
        out = subprocess.run([sys.executable, "-c", _FIRST], capture_output=True, text=True, check=True)  # noqa: S603
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    import_s, first_s, second_s = (statistics.median(r[i] for r in runs) for i in range(3))
    return {"import_ms": import_s * 1000, "first_pdf_ms": first_s * 1000, "second_pdf_ms": second_s * 1000}


def worker(cpu: int, count: int) -> None:
    """Render `count` certificates when told to go (a line on stdin); print the seconds it took."""
    _pin(cpu)
    for i in range(5):
        render(2 * 10**6 + cpu * 1000 + i)
    print("ready", flush=True)
    sys.stdin.readline()
    start = time.perf_counter()
    for i in range(count):
        render(3 * 10**6 + cpu * 100_000 + i)
    print(time.perf_counter() - start, flush=True)


def both_cores(count: int) -> float:
    """Certificates per second of two processes on two CPUs, started together."""
    procs = [
        subprocess.Popen(  # noqa: S603 (this interpreter, fixed arguments)
            [sys.executable, "-m", "bench.pdf", "--worker", str(cpu), "--n", str(count)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for cpu in (0, 1)
    ]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    seconds = []
    for proc in procs:
        assert proc.stdout is not None
        seconds.append(float(proc.stdout.readline()))
        proc.wait(60)
    return 2 * count / max(seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pdf")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--n", type=int, default=60, help="distinct certificates per pass (default 60)")
    parser.add_argument("--memory-n", type=int, default=300, help="certificates for the memory check (default 300)")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        worker(args.worker, args.n)
        return 0

    first = first_figures()
    _pin()
    for i in range(5):
        render(10**7 + i)
    rates, sizes, counter = [], [], 0
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(args.n):
            sizes.append(len(render(counter)))
            counter += 1
        rates.append(args.n / (time.perf_counter() - start))
    warm = statistics.median(rates)
    gc.collect()
    rss_before = _rss_mib()
    for i in range(args.memory_n):
        render(10**5 + i)
    gc.collect()
    rss_after = _rss_mib()
    two = both_cores(args.n) if (os.cpu_count() or 1) >= 2 else None

    result: dict[str, Any] = {
        "pdf_warm_per_s_one_core": round(warm, 1),
        "pdf_warm_ms": round(1000 / warm, 1),
        "pdf_per_s_two_cores": round(two, 1) if two else None,
        "pdf_first_import_ms": round(first["import_ms"]),
        "pdf_first_pdf_ms": round(first["first_pdf_ms"]),
        "pdf_second_pdf_ms": round(first["second_pdf_ms"]),
        "pdf_bytes_median": round(statistics.median(sizes)),
        "memory_check_pdfs": args.memory_n,
        "rss_mib_before_memory_check": round(rss_before, 1),
        "rss_mib_after_memory_check": round(rss_after, 1),
        "distinct_certificates_per_pass": args.n,
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"warm, one core:   {warm:6.1f} PDFs/s ({1000 / warm:.1f} ms each, median of 5 passes of {args.n})")
    if two:
        print(f"two processes:    {two:6.1f} PDFs/s (one per CPU)")
    print(f"fresh process:    import {first['import_ms']:.0f} ms, first PDF {first['first_pdf_ms']:.0f} ms, "
          f"second {first['second_pdf_ms']:.0f} ms")  # fmt: skip
    print(f"memory:           RSS {rss_before:.1f} -> {rss_after:.1f} MiB over {args.memory_n} more PDFs")
    print(f"PDF size:         {statistics.median(sizes) / 1024:.0f} KiB median; {result['machine']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
