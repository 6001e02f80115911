"""An independent client of an OpenSearch/Elasticsearch server for the
end-to-end tests: Python's standard library only, so it shares nothing with
the engine's sink.

    search_client.py URL docs INDEX         every document of INDEX (a name
                                            or pattern) as one JSON line:
                                            {"_id", "_index", "_source"}
    search_client.py URL create INDEX JSON  creates INDEX with JSON as body
"""

import json
import sys
import urllib.error
import urllib.request


def call(method, url, body=None, content_type="application/json"):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        raise SystemExit(f"{method} {url}: {e.code} {e.read().decode()}")


def docs(base, index):
    call("POST", f"{base}/{index}/_refresh")
    after = None
    while True:
        query = {"size": 1000, "sort": [{"_id": "asc"}], "query": {"match_all": {}}}
        if after is not None:
            query["search_after"] = after
        answer = call("POST", f"{base}/{index}/_search", query)
        if answer is None:
            return
        hits = answer["hits"]["hits"]
        for hit in hits:
            print(json.dumps({"_id": hit["_id"], "_index": hit["_index"], "_source": hit["_source"]}))
        if len(hits) < 1000:
            return
        after = hits[-1]["sort"]


def main():
    base, command = sys.argv[1].rstrip("/"), sys.argv[2]
    if command == "docs":
        docs(base, sys.argv[3])
    elif command == "create":
        print(json.dumps(call("PUT", f"{base}/{sys.argv[3]}", json.loads(sys.argv[4]))))
    else:
        raise SystemExit(f"unknown command {command}")


main()
