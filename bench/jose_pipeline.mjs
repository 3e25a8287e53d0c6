// The anchor: what a user would write instead of entragate, a JavaScript Worker doing the same
// request pipeline with jose. Read the target, pick the route, take the bearer token,
// jwtVerify it (same key, algorithm, issuer, audiences, skew, required exp), check the route's
// condition, build the identity headers (and, with an assertion key, sign an ES256 assertion).
// The routes are the example policy's (examples/policies/gateway.toml) written by hand, as such a Worker
// would have them; no cache, since jose has none.

import { SignJWT, importJWK, jwtVerify } from "jose";

const ADMINS = "11111111-1111-4111-8111-111111111111";
const BLOCKED = ["99999999-9999-4999-8999-999999999999"];
const PREFIX = "x-entragate-";
const BEARER = /^Bearer ([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)$/i;

const under = (path, prefix) => path === prefix || path.startsWith(prefix + "/");
const kind = (claims) => claims.idtyp ?? (!claims.scp && claims.oid === claims.sub ? "app" : "user");
const ROUTES = [
  { name: "healthz", matches: (method, path) => path === "/healthz" && method === "GET", public: true },
  {
    name: "api-read",
    matches: (method, path) => under(path, "/api") && (method === "GET" || method === "HEAD"),
    allow: (claims) => (claims.scp ?? "").split(" ").includes("access_as_user"),
  },
  {
    name: "admin",
    matches: (method, path) => under(path, "/admin"),
    allow: (claims) => (claims.groups ?? []).includes(ADMINS) && kind(claims) === "user",
    deny: (claims) => BLOCKED.includes(claims.oid),
  },
];

// jwtVerify's key and options: the checks entragate makes, as jose spells them.
export async function joseVerification(setup) {
  const jwk = setup.keys.find((key) => key.kid === setup.signing_kid);
  return {
    jwk,
    key: await importJWK({ kty: jwk.kty, n: jwk.n, e: jwk.e }, "RS256"),
    options: {
      algorithms: ["RS256"],
      issuer: setup.issuers["2.0"],
      audience: setup.vars.ENTRA_AUDIENCES.split(","),
      clockTolerance: 60,
      requiredClaims: ["exp"],
    },
  };
}

export async function josePipeline(setup, { assertion = false } = {}) {
  const { key, options } = await joseVerification(setup);
  const signingJwk = JSON.parse(setup.vars.ASSERTION_SIGNING_KEY);
  const signingKey = assertion ? await importJWK({ ...signingJwk, alg: "ES256" }, "ES256") : null;
  const origin = "https://origin.example.com";

  return async function handle(method, url, authorization) {
    const { pathname, search } = new URL(url);
    const route = ROUTES.find((candidate) => candidate.matches(method, pathname));
    if (!route) return { status: 403 };
    const add = [[PREFIX + "request-id", "bench"], [PREFIX + "rule", route.name]];
    if (route.public) return { status: 200, url: origin + pathname + search, add };
    const bearer = BEARER.exec(authorization ?? "");
    if (!bearer) return { status: 401 };
    let claims;
    try {
      ({ payload: claims } = await jwtVerify(bearer[1], key, options));
    } catch {
      return { status: 401 };
    }
    if ((route.deny && route.deny(claims)) || !route.allow(claims)) return { status: 403 };
    const fields = [["user-oid", claims.oid], ["tenant-id", claims.tid], ["subject", claims.sub],
      ["name", claims.name], ["username", claims.preferred_username], ["client-id", claims.azp],
      ["token-kind", kind(claims)], ["scopes", claims.scp], ["groups", (claims.groups ?? []).join(",")],
      ["roles", (claims.roles ?? []).join(",")]];
    for (const [name, value] of fields) if (value) add.push([PREFIX + name, encodeURI(value)]);
    if (signingKey) {
      const now = Math.floor(Date.now() / 1000);
      add.push([PREFIX + "assertion", await new SignJWT({
        oid: claims.oid, tid: claims.tid, sub: claims.sub, groups: claims.groups ?? [], roles: claims.roles ?? [],
        jti: "bench", htm: method, htu: origin + pathname, rule: route.name,
      }).setProtectedHeader({ alg: "ES256", typ: "JWT", kid: "bench" }).setIssuer("https://gateway.example.com")
        .setAudience(origin).setIssuedAt(now).setNotBefore(now).setExpirationTime(now + 60).sign(signingKey)]);
    }
    return { status: 200, url: origin + pathname + search, add };
  };
}
