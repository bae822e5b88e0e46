// Validates Kubernetes objects (a JSON array on stdin) against the OpenAPI schemas that the npm
// packages kubernetes-models and @kubernetes-models/prometheus-operator ship (offline: the
// validators are compiled into the packages). Prints one line per object; exit 1 if any fails.
// Before the real objects it checks itself: a Deployment with a wrongly typed field must fail,
// so a validator that accepts everything cannot pass the test.
import { readFileSync } from "node:fs";

function moduleFor(apiVersion) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  if (group === "monitoring.coreos.com") return `@kubernetes-models/prometheus-operator/${group}/${version}`;
  return group ? `kubernetes-models/${group}/${version}` : `kubernetes-models/${version}`;
}

async function validate(obj) {
  let Kind;
  try {
    Kind = (await import(moduleFor(obj.apiVersion)))[obj.kind];
  } catch (e) {
    return `no schema for ${obj.apiVersion}`;
  }
  if (!Kind) return `no schema for kind ${obj.kind} in ${obj.apiVersion}`;
  try {
    new Kind(obj).validate();
    return null;
  } catch (e) {
    return e.message;
  }
}

const objects = JSON.parse(readFileSync(0, "utf8"));
let failed = 0;

const dep = objects.find((o) => o.kind === "Deployment");
if (dep) {
  const broken = structuredClone(dep);
  broken.spec.replicas = "two";
  const err = await validate(broken);
  console.log(err ? `ok   self-test: replicas "two" rejected (${err})` : "FAIL self-test: a string replicas count passed");
  if (!err) failed++;
}

for (const o of objects) {
  const err = await validate(o);
  console.log(`${err ? "FAIL" : "ok  "} ${o.apiVersion} ${o.kind}/${o.metadata?.name}${err ? ": " + err : ""}`);
  if (err) failed++;
}
console.log(`${objects.length + (dep ? 1 : 0) - failed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
