// Reports events with the official @topsort/sdk from Node, as a shop's server would (eventpipe's tests
// run it against a receiver). Input on stdin, JSON: {host, apiKey, event}. Output on stdout, JSON: what
// reportEvent returned, or the error it threw (the reply's status, statusText and body, and retry).
import { readFileSync } from "node:fs";
import { TopsortClient } from "@topsort/sdk";

const { host, apiKey, event } = JSON.parse(readFileSync(0, "utf8"));
const client = new TopsortClient({ apiKey, host });
try {
  console.log(JSON.stringify({ result: await client.reportEvent(event) }));
} catch (error) {
  const { status, statusText, body, retry } = error;
  console.log(JSON.stringify({ error: { status, statusText, body, retry } }));
}
