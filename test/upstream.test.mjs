// Login through a tenant's upstream OpenID Connect provider (docs/upstream.md)
// with real clients on every side: a real third-party OpenID provider
// (panva's oidc-provider, OpenID certified) on a loopback port, the real
// @supabase/auth-js (signInWithOAuth with PKCE, exchangeCodeForSession),
// and Debian's headless Chromium (Playwright) posting the provider's login
// and consent forms as a user would.
//
// test/authjs.sh starts `keyshard serve --outbound-allow-private` (the
// provider is on loopback, which Keyshard refuses otherwise) and exports
// KEYSHARD_BASE_URL, KEYSHARD_ADMIN_TOKEN and KEYSHARD_BACKEND_A/B. This
// file makes a tenant of its own on each backend, registers one client per
// tenant at the provider (its redirect URI: the tenant's /callback), and
// creates the provider "corp" in each tenant. The browser part needs
// Chromium at CHROMIUM (default /usr/bin/chromium) and skips without it.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { createServer } from 'node:http'
import { generateKeyPairSync, randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import Provider from 'oidc-provider'
import { GoTrueClient } from '@supabase/auth-js'
import { chromium } from 'playwright-core'

const BASE = process.env.KEYSHARD_BASE_URL
const ADMIN_TOKEN = process.env.KEYSHARD_ADMIN_TOKEN
if (!BASE || !ADMIN_TOKEN) {
  throw new Error('set KEYSHARD_BASE_URL and KEYSHARD_ADMIN_TOKEN (test/authjs.sh does)')
}
// One tenant per distinct backend (the default run has both on SQLite).
const BACKENDS = [...new Set([process.env.KEYSHARD_BACKEND_A || 'sqlite', process.env.KEYSHARD_BACKEND_B || 'sqlite'])]
const browserPath = process.env.CHROMIUM || '/usr/bin/chromium'
const noBrowser = !existsSync(browserPath) && `no Chromium at ${browserPath} (apt-get install -y chromium): the browser logins are skipped`
const RUN = `${process.pid}-${Date.now().toString(36)}`
const SITE = 'http://localhost:3000'
const WELCOME = `${SITE}/welcome`
const REQUEST_TIMEOUT = 15_000 // every HTTP request of this file
const STEP_TIMEOUT = 15_000 // every browser wait

const timedFetch = (input, init = {}) => fetch(input, { ...init, signal: init.signal ?? AbortSignal.timeout(REQUEST_TIMEOUT) })

// ---------------------------------------------------------------------------
// The provider's one user. Its development login form takes any login as
// the account id (the sub) and any password; findAccount knows only this one.

const ACCOUNT = {
  login: `alice-${RUN}`,
  email: `alice-${RUN}@corp.example`,
  name: 'Alice Corp',
}

// ---------------------------------------------------------------------------
// The provider: an HTTP server on a free loopback port first (the issuer
// names the port), the Provider itself once the tenants are known (each
// tenant's client is registered with its callback).

let handler = (req, res) => {
  res.writeHead(503)
  res.end()
}
const opServer = createServer((req, res) => handler(req, res))
await new Promise((resolve, reject) => {
  opServer.once('error', reject)
  opServer.listen(0, '127.0.0.1', () => {
    opServer.off('error', reject)
    resolve()
  })
})
const ISSUER = `http://127.0.0.1:${opServer.address().port}`
const opEvents = [] // what the provider reported as failed, for the assertion messages

function startProvider(tenants) {
  const jwk = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' })
  const provider = new Provider(ISSUER, {
    clients: tenants.map((T) => ({
      client_id: T.clientId,
      client_secret: T.clientSecret,
      redirect_uris: [T.callback],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    })),
    async findAccount(ctx, id) {
      if (id !== ACCOUNT.login) return undefined
      return {
        accountId: id,
        async claims() {
          return { sub: id, email: ACCOUNT.email, email_verified: true, name: ACCOUNT.name }
        },
      }
    },
    claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
    // The scope's claims in the ID token too (not only at userinfo).
    conformIdTokenClaims: false,
    // PKCE allowed (Keyshard sends an S256 challenge), not required.
    pkce: { methods: ['S256'], required: () => false },
    features: { devInteractions: { enabled: true } },
    jwks: { keys: [{ ...jwk, kid: `k-${RUN}`, alg: 'RS256', use: 'sig' }] },
    cookies: { keys: [randomBytes(32).toString('hex')] },
    ttl: { AccessToken: 600, AuthorizationCode: 60, IdToken: 600, Interaction: 600, Session: 600, Grant: 600 },
  })
  for (const ev of ['server_error', 'authorization.error', 'grant.error', 'userinfo.error']) {
    provider.on(ev, (ctx, err) => opEvents.push(`${ev}: ${err?.message ?? ctx?.message}${err?.error_description ? ` (${err.error_description})` : ''}`))
  }
  handler = provider.callback()
  return provider
}

// ---------------------------------------------------------------------------
// The platform API and the tenants.

async function call(method, url, token, body) {
  const r = await timedFetch(url, {
    method,
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  })
  const text = await r.text()
  return { status: r.status, body: text ? JSON.parse(text) : null, text }
}

async function platform(method, path, body) {
  const r = await call(method, BASE + path, ADMIN_TOKEN, body)
  if (r.status >= 300) throw new Error(`${method} ${path}: ${r.status} ${r.text}`)
  return r.body
}

const created = []
const tenants = BACKENDS.map((backend, i) => {
  const slug = `upstream-${i}-${process.pid}`
  const url = `${BASE}/t/${slug}`
  return {
    backend, slug, url, callback: `${url}/callback`, key: null,
    clientId: `keyshard-${slug}`, clientSecret: randomBytes(24).toString('base64url'),
  }
})

before(async () => {
  for (const T of tenants) {
    await platform('POST', '/admin/tenants', { slug: T.slug, backend: T.backend })
    created.push(T.slug)
    await platform('POST', `/admin/tenants/${T.slug}/approve`)
    T.key = (await platform('POST', `/admin/tenants/${T.slug}/service-key`)).service_key
    const cfg = await call('PATCH', `${T.url}/admin/config/auth`, T.key, { site_url: SITE, uri_allow_list: `${SITE}/**` })
    assert.equal(cfg.status, 200, `PATCH /admin/config/auth: ${cfg.text}`)
  }
  startProvider(tenants)
})

after(async () => {
  for (const slug of created) {
    await platform('DELETE', `/admin/tenants/${slug}`).catch((err) => console.error(`deleting ${slug}:`, err.message))
  }
  opServer.closeAllConnections()
  await new Promise((resolve) => opServer.close(resolve))
})

// ---------------------------------------------------------------------------
// Clients and the browser.

function memoryStorage() {
  const m = new Map()
  return {
    map: m,
    getItem: (k) => (m.has(k) ? m.get(k) : null),
    setItem: (k, v) => void m.set(k, v),
    removeItem: (k) => void m.delete(k),
  }
}

// A PKCE client whose code verifier stays in memory between
// signInWithOAuth and exchangeCodeForSession.
const pkceClient = (T) =>
  new GoTrueClient({
    url: T.url, flowType: 'pkce', storage: memoryStorage(), persistSession: true,
    autoRefreshToken: false, detectSessionInUrl: false, fetch: timedFetch,
  })

async function launch() {
  return chromium.launch({
    executablePath: browserPath,
    timeout: STEP_TIMEOUT,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  })
}

// A fresh browser profile (no provider session) whose app origin,
// http://localhost:3000, is answered by the test, and which records every
// request to the tenant's /callback (the provider's redirect back).
async function newTab(browser, T) {
  const ctx = await browser.newContext()
  ctx.setDefaultTimeout(STEP_TIMEOUT)
  ctx.setDefaultNavigationTimeout(STEP_TIMEOUT)
  await ctx.route(`${SITE}/**`, (route) =>
    route.fulfill({ status: 200, contentType: 'text/html', body: '<!doctype html><title>App</title><h1 id="app">Back in the app</h1>' }))
  const tab = await ctx.newPage()
  const callbacks = []
  tab.on('request', (req) => {
    if (req.url().startsWith(T.callback)) callbacks.push(req.url())
  })
  return { ctx, tab, callbacks }
}

// browserLogin opens the URL signInWithOAuth gave, logs in at the provider
// (its login form, then its consent form if it asks), and returns where
// the browser ended in the app, and the provider's redirect to /callback.
async function browserLogin(browser, T, url) {
  const { ctx, tab, callbacks } = await newTab(browser, T)
  try {
    await tab.goto(url)
    assert.ok(tab.url().startsWith(`${ISSUER}/interaction/`), `Keyshard sent the browser to the provider's login: ${tab.url()}`)
    await tab.locator('input[name="login"]').fill(ACCOUNT.login)
    await tab.locator('input[name="password"]').fill('any password will do')
    await tab.getByRole('button', { name: 'Sign-in' }).click()
    const consent = tab.getByRole('button', { name: 'Continue' })
    await consent.or(tab.locator('#app')).waitFor()
    if (await consent.isVisible()) await consent.click()
    await tab.waitForURL((u) => u.href.startsWith(WELCOME))
    return { back: new URL(tab.url()), callbacks }
  } catch (err) {
    err.message += `\n  browser at ${tab.url()}\n  provider events: ${opEvents.join('; ') || 'none'}`
    throw err
  } finally {
    await ctx.close()
  }
}

const claimsOf = (jwt) => JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url'))

// A callback URL fetched as a browser would, without following: where it
// sends (the Location header as sent, and parsed).
async function callbackLocation(url) {
  const r = await timedFetch(url, { redirect: 'manual' })
  await r.arrayBuffer()
  assert.equal(r.status, 302, `GET ${url}`)
  const raw = r.headers.get('location')
  return { raw, loc: new URL(raw) }
}

// ---------------------------------------------------------------------------

for (const [i, backend] of BACKENDS.entries()) {
  test(`login through an upstream OpenID provider (oidc-provider) on ${backend}`, { timeout: 60_000 }, async (t) => {
    const T = tenants[i]
    let userId
    const browser = noBrowser ? null : await launch()
    t.after(() => browser?.close())

    await t.test('the provider "corp" is created with the service key; its callback_url is the redirect URI registered', async () => {
      const r = await call('POST', `${T.url}/admin/custom-providers`, T.key, {
        id: 'corp', issuer: ISSUER, client_id: T.clientId, client_secret: T.clientSecret, scopes: ['openid', 'email', 'profile'],
      })
      assert.equal(r.status, 201, r.text)
      assert.equal(r.body.id, 'corp')
      assert.equal(r.body.type, 'oidc')
      assert.equal(r.body.client_secret_set, true)
      assert.equal(r.body.client_secret, undefined, 'the secret is never shown')
      assert.equal(r.body.enabled, true)
      assert.equal(r.body.callback_url, T.callback)
      const settings = await (await timedFetch(`${T.url}/settings`)).json()
      assert.equal(settings.external?.corp, true, `settings.external lists corp: ${JSON.stringify(settings.external)}`)
    })

    await t.test('a forged state at /callback goes back to site_url with error_code bad_oauth_state', async () => {
      const { raw, loc } = await callbackLocation(`${T.callback}?state=forged.x&code=y`)
      assert.ok(raw.startsWith(`${SITE}#error=access_denied&error_code=bad_oauth_state&`), raw)
      const f = new URLSearchParams(loc.hash.slice(1))
      assert.equal(f.get('error'), 'access_denied')
      assert.equal(f.get('error_code'), 'bad_oauth_state')
      assert.ok(f.get('error_description'))
    })

    await t.test('browser: signInWithOAuth → provider login and consent → ?code= → exchangeCodeForSession', { skip: noBrowser }, async () => {
      const c = pkceClient(T)
      const { data, error } = await c.signInWithOAuth({ provider: 'corp', options: { redirectTo: WELCOME, skipBrowserRedirect: true } })
      assert.equal(error, null)
      const start = new URL(data.url)
      assert.equal(`${start.origin}${start.pathname}`, `${T.url}/authorize`)
      assert.equal(start.searchParams.get('provider'), 'corp')
      assert.equal(start.searchParams.get('redirect_to'), WELCOME)
      assert.ok(start.searchParams.get('code_challenge'), 'PKCE: a code challenge')

      const { back, callbacks } = await browserLogin(browser, T, data.url)
      assert.equal(callbacks.length, 1, `the provider sent the browser to /callback once: ${callbacks}`)
      const cb = new URL(callbacks[0])
      assert.ok(cb.searchParams.get('code') && cb.searchParams.get('state'), `the provider's redirect carries code and state: ${cb}`)
      assert.equal(back.searchParams.get('error'), null, `no error: ${back.searchParams.get('error_code')} ${back.searchParams.get('error_description')}`)
      const code = back.searchParams.get('code')
      assert.ok(code, `?code= at ${back}`)
      assert.equal(back.hash, '', 'PKCE: nothing in the fragment')

      const ex = await c.exchangeCodeForSession(code)
      assert.equal(ex.error, null)
      assert.ok(ex.data.session?.access_token && ex.data.session.refresh_token)
      const claims = claimsOf(ex.data.session.access_token)
      assert.ok(Array.isArray(claims.amr) && claims.amr.some((a) => a.method === 'oauth'), `amr is oauth: ${JSON.stringify(claims.amr)}`)
      assert.equal(claims.email, ACCOUNT.email)

      const { data: me, error: meErr } = await c.getUser()
      assert.equal(meErr, null)
      const u = me.user
      userId = u.id
      assert.equal(u.email, ACCOUNT.email, 'the address from the provider')
      assert.ok(u.email_confirmed_at, 'confirmed: the provider verified the address')
      assert.equal(u.app_metadata.provider, 'corp')
      assert.ok(u.app_metadata.providers?.includes('corp'), JSON.stringify(u.app_metadata))
      assert.equal(u.user_metadata.name, ACCOUNT.name, `the identity's data as user_metadata: ${JSON.stringify(u.user_metadata)}`)
      const idn = u.identities?.find((x) => x.provider === 'corp')
      assert.ok(idn, `an identity with provider corp: ${JSON.stringify(u.identities)}`)
      assert.equal(idn.id, ACCOUNT.login, 'the identity is the provider\'s subject')
      assert.equal(idn.user_id, u.id)
      assert.equal(idn.identity_data?.email, ACCOUNT.email)
      assert.equal(idn.identity_data?.sub, ACCOUNT.login)

      const ids = await c.getUserIdentities()
      assert.equal(ids.error, null)
      assert.deepEqual(ids.data.identities.map((x) => x.provider), ['corp'])
      assert.equal(ids.data.identities[0].identity_id, idn.identity_id)
    })

    await t.test('browser: a second login of the same account finds the same user; its /callback replayed is bad_oauth_state', { skip: noBrowser }, async () => {
      assert.ok(userId, 'the first login made the user')
      const c = pkceClient(T)
      const { data, error } = await c.signInWithOAuth({ provider: 'corp', options: { redirectTo: WELCOME, skipBrowserRedirect: true } })
      assert.equal(error, null)
      const { back, callbacks } = await browserLogin(browser, T, data.url)
      const code = back.searchParams.get('code')
      assert.ok(code, `?code= at ${back}`)
      const ex = await c.exchangeCodeForSession(code)
      assert.equal(ex.error, null)
      assert.equal(ex.data.user.id, userId, 'the same user')
      assert.equal(ex.data.user.identities.filter((x) => x.provider === 'corp').length, 1, 'still one identity')

      const { data: list, error: listErr } = await new GoTrueClient({
        url: T.url, headers: { Authorization: `Bearer ${T.key}` }, autoRefreshToken: false, persistSession: false, fetch: timedFetch,
      }).admin.listUsers()
      assert.equal(listErr, null)
      assert.deepEqual(list.users.map((x) => x.email), [ACCOUNT.email], 'one user in the tenant')

      // The provider's redirect to /callback, which the browser already
      // used, again: the state is spent.
      assert.equal(callbacks.length, 1)
      const { raw, loc } = await callbackLocation(callbacks[0])
      assert.ok(raw.startsWith(`${SITE}#`), `no state to trust: to site_url, the error in the fragment: ${raw}`)
      const f = new URLSearchParams(loc.hash.slice(1))
      assert.equal(f.get('error'), 'access_denied', loc.href)
      assert.equal(f.get('error_code'), 'bad_oauth_state', loc.href)
    })

    await t.test('browser: the user cancels at the provider → back to redirect_to with ?error=access_denied', { skip: noBrowser }, async () => {
      const c = pkceClient(T)
      const { data, error } = await c.signInWithOAuth({ provider: 'corp', options: { redirectTo: WELCOME, skipBrowserRedirect: true } })
      assert.equal(error, null)
      const { ctx, tab } = await newTab(browser, T)
      let back
      try {
        await tab.goto(data.url)
        await tab.getByRole('link', { name: '[ Cancel ]' }).click()
        await tab.waitForURL((u) => u.href.startsWith(WELCOME))
        back = new URL(tab.url())
      } finally {
        await ctx.close()
      }
      assert.equal(back.searchParams.get('error'), 'access_denied', back.href)
      assert.equal(back.searchParams.get('error_code'), 'bad_oauth_callback', back.href)
      assert.match(back.searchParams.get('error_description') ?? '', /aborted/i)
      assert.equal(back.searchParams.get('code'), null)
    })
  })
}
