"""Load the restaurants' registries in a restarted Odoo before it takes traffic again.

    odoo_warmup.py ADDRESS PORT WORKERS SECONDS HOST [HOST ...]

Each of Odoo's prefork workers loads a database's registry on that database's first request
(seconds each on a small machine). A server put back behind the web balancers right after a
restart makes its first customers wait for those loads, long enough for their requests to
time out. So each restaurant's /web/login is asked for WORKERS times at once, WORKERS
requests in flight: a worker busy loading does not accept, so the requests of one round
spread over the workers. Stops after SECONDS (what is not warm by then loads on first use).

Prints a JSON object: {"warm": [hosts], "failed": {host: reason}, "skipped": [hosts],
"seconds": total}. Exits 0 whatever the answers: the caller decides (a restaurant that
answers 500 here is reported, the deploy's own health check is /web/health).
"""
import http.client
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor


def get(address, port, host, timeout):
    conn = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        conn.request('GET', '/web/login', headers={'Host': host, 'X-Forwarded-Proto': 'https'})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def main(argv):
    if len(argv) < 5:
        sys.stderr.write(__doc__)
        return 2
    address, port, workers, seconds = argv[0], int(argv[1]), max(1, int(argv[2])), float(argv[3])
    hosts = argv[4:]
    t0 = time.time()
    warm, failed, skipped = [], {}, []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for host in hosts:
            left = seconds - (time.time() - t0)
            if left <= 1:
                skipped.append(host)
                continue
            futures = [pool.submit(get, address, port, host, left) for _round in range(workers)]
            reasons = []
            for future in futures:
                try:
                    status = future.result()
                    if status != 200:
                        reasons.append('HTTP %d' % status)
                except (OSError, http.client.HTTPException) as exc:
                    reasons.append('%s: %s' % (type(exc).__name__, exc))
            if reasons:
                failed[host] = reasons[0]
            else:
                warm.append(host)
    print(json.dumps(dict(warm=warm, failed=failed, skipped=skipped, seconds=round(time.time() - t0, 1))))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
