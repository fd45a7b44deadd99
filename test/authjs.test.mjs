// The real @supabase/auth-js client against a live Keyshard server.
//
// Starts nothing itself: set KEYSHARD_TENANT_A_URL and KEYSHARD_TENANT_B_URL
// to the base URLs of two active tenants (http://HOST/t/{slug}), then run
// `node --test test/authjs.test.mjs`. test/authjs.sh sets everything up.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { AuthClient } from '@supabase/auth-js'

const A = process.env.KEYSHARD_TENANT_A_URL
const B = process.env.KEYSHARD_TENANT_B_URL
const HS = process.env.KEYSHARD_TENANT_HS_URL // a tenant whose key is an HS256 secret
const A_KEY = process.env.KEYSHARD_TENANT_A_SERVICE_KEY // tenant A's service key (admin API)
if (!A || !B) {
  throw new Error('set KEYSHARD_TENANT_A_URL and KEYSHARD_TENANT_B_URL to two tenants\' base URLs')
}

const client = (url, options = {}) =>
  new AuthClient({ url, autoRefreshToken: false, persistSession: false, detectSessionInUrl: false, ...options })

// A client whose requests are recorded (their paths), to tell which way
// getClaims verified a token: by the JWKS, or by asking the server.
const recording = (url) => {
  const paths = []
  const fetch = (input, init) => {
    paths.push(new URL(typeof input === 'string' ? input : input.url).pathname)
    return globalThis.fetch(input, init)
  }
  return { c: client(url, { fetch }), paths }
}

const email = `alice-${process.pid}-${Date.now()}@example.com`
const password = 'correct horse battery'

test('auth-js against keyshard', async (t) => {
  const a = client(A)
  const b = client(B)
  let session

  await t.test('signUp returns a session (auto-confirm)', async () => {
    const { data, error } = await a.signUp({ email, password, options: { data: { plan: 'free' } } })
    assert.equal(error, null)
    assert.ok(data.session?.access_token)
    assert.equal(data.user.email, email)
    assert.equal(data.user.user_metadata.plan, 'free')
    assert.equal(data.user.identities.length, 1)
  })

  await t.test('signUp of a taken email fails with user_already_exists', async () => {
    const { error } = await client(A).signUp({ email, password })
    assert.equal(error?.code, 'user_already_exists')
    assert.equal(error?.status, 422)
  })

  await t.test('signUp with a weak password fails with weak_password', async () => {
    const { error } = await client(A).signUp({ email: `weak-${email}`, password: 'abc' })
    assert.equal(error?.code, 'weak_password')
    assert.deepEqual(error?.reasons, ['length'])
  })

  await t.test('signInWithPassword', async () => {
    const { data, error } = await a.signInWithPassword({ email, password })
    assert.equal(error, null)
    assert.equal(data.user.email, email)
    session = data.session
    assert.ok(session.refresh_token)
    assert.equal(session.token_type, 'bearer')
  })

  await t.test('wrong password fails with invalid_credentials', async () => {
    const { data, error } = await client(A).signInWithPassword({ email, password: 'wrong password' })
    assert.equal(data.session, null)
    assert.equal(error?.code, 'invalid_credentials')
    assert.equal(error?.status, 400)
  })

  await t.test('getUser', async () => {
    const { data, error } = await a.getUser()
    assert.equal(error, null)
    assert.equal(data.user.email, email)
    assert.equal(data.user.aud, 'authenticated')
  })

  await t.test('updateUser', async () => {
    const { data, error } = await a.updateUser({ data: { plan: 'pro' } })
    assert.equal(error, null)
    assert.equal(data.user.user_metadata.plan, 'pro')
    const again = await a.getUser()
    assert.equal(again.data.user.user_metadata.plan, 'pro')
  })

  await t.test('refreshSession rotates the refresh token', async () => {
    const { data, error } = await a.refreshSession()
    assert.equal(error, null)
    assert.ok(data.session.access_token)
    assert.notEqual(data.session.refresh_token, session.refresh_token)
    assert.equal(data.user.email, email)
    session = data.session
  })

  await t.test('getClaims verifies an ES256 token through the JWKS', async () => {
    const { c, paths } = recording(A)
    const { data, error } = await c.getClaims(session.access_token)
    assert.equal(error, null)
    assert.equal(data.header.alg, 'ES256')
    assert.equal(data.claims.email, email)
    assert.equal(data.claims.sub, session.user.id)
    // Verified with the published key, without asking the server.
    assert.ok(paths.some((p) => p.endsWith('/.well-known/jwks.json')), `requests: ${paths}`)
    assert.ok(!paths.some((p) => p.endsWith('/user')), `requests: ${paths}`)
    // A token with a changed payload fails the signature.
    const [h, p, s] = session.access_token.split('.')
    const claims = JSON.parse(Buffer.from(p, 'base64url'))
    claims.role = 'service_role'
    const forged = [h, Buffer.from(JSON.stringify(claims)).toString('base64url'), s].join('.')
    const bad = await c.getClaims(forged)
    assert.equal(bad.data, null)
    assert.equal(bad.error?.name, 'AuthInvalidJwtError')
  })

  await t.test('getClaims of an HS256 tenant asks the server (getUser)', async () => {
    const hs = client(HS)
    const up = await hs.signUp({ email, password })
    assert.equal(up.error, null)
    const { c, paths } = recording(HS)
    const { data, error } = await c.getClaims(up.data.session.access_token)
    assert.equal(error, null)
    assert.equal(data.header.alg, 'HS256')
    assert.equal(data.claims.email, email)
    assert.ok(paths.some((p) => p.endsWith('/user')), `requests: ${paths}`)
    // Its JWKS never holds the secret (only the retired ES256 key, which
    // verifies the tokens it signed until they expire).
    const jwks = await (await fetch(`${HS}/.well-known/jwks.json`)).json()
    assert.ok(!jwks.keys.some((k) => k.kid === data.header.kid || k.kty === 'oct' || k.alg === 'HS256'), JSON.stringify(jwks))
  })

  await t.test('admin: listUsers pages newest first (Link, X-Total-Count), bans', async () => {
    const admin = client(A, { headers: { Authorization: `Bearer ${A_KEY}` } }).admin
    for (const n of [1, 2]) {
      const { error } = await admin.createUser({ email: `p${n}-${email}`, password, email_confirm: true, user_metadata: { n } })
      assert.equal(error, null)
    }
    const { data, error } = await admin.listUsers({ page: 1, perPage: 1 })
    assert.equal(error, null)
    assert.equal(data.users.length, 1)
    assert.equal(data.users[0].email, `p2-${email}`) // the newest
    assert.deepEqual(data.users[0].user_metadata, { n: 2, email_verified: true }) // as sent, and email_verified
    assert.equal(data.nextPage, 2)
    assert.equal(data.lastPage, 3)
    assert.equal(data.total, 3)
    const last = await admin.listUsers({ page: 3, perPage: 1 })
    assert.equal(last.data.users[0].email, email) // the oldest
    assert.equal(last.data.nextPage, null)
    const bad = await admin.listUsers({ page: -1 })
    assert.equal(bad.error?.code, 'validation_failed')
    // A ban: the right password answers user_banned.
    const ban = await admin.updateUserById(data.users[0].id, { ban_duration: '1h' })
    assert.equal(ban.error, null)
    assert.ok(ban.data.user.banned_until)
    const signIn = await client(A).signInWithPassword({ email: `p2-${email}`, password })
    assert.equal(signIn.error?.code, 'user_banned')
    const lifted = await admin.updateUserById(data.users[0].id, { ban_duration: 'none' })
    assert.equal(lifted.error, null)
    assert.equal((await client(A).signInWithPassword({ email: `p2-${email}`, password })).error, null)
  })

  await t.test('admin.oauth: create, list (paged), get, update, regenerate the secret, delete', async () => {
    const oauth = client(A, { headers: { Authorization: `Bearer ${A_KEY}` } }).admin.oauth
    const made = []
    for (const n of [1, 2]) {
      const { data, error } = await oauth.createClient({ client_name: `App ${n}`, redirect_uris: [`https://app${n}.example/cb`], scope: 'openid email' })
      assert.equal(error, null)
      assert.equal(data.client_type, 'confidential')
      assert.equal(data.registration_type, 'manual')
      assert.equal(data.token_endpoint_auth_method, 'client_secret_basic')
      assert.deepEqual(data.grant_types, ['authorization_code', 'refresh_token'])
      assert.deepEqual(data.response_types, ['code'])
      assert.equal(data.scope, 'openid email')
      assert.ok(data.client_secret)
      made.push(data)
    }
    const page = await oauth.listClients({ page: 1, perPage: 1 })
    assert.equal(page.error, null)
    assert.equal(page.data.clients.length, 1)
    assert.ok(page.data.total >= 2)
    assert.equal(page.data.nextPage, 2)
    const got = await oauth.getClient(made[0].client_id)
    assert.equal(got.data.client_name, 'App 1')
    assert.equal(got.data.client_secret, undefined, 'a secret is shown once')
    const upd = await oauth.updateClient(made[0].client_id, { client_name: 'App One', redirect_uris: ['https://one.example/cb'] })
    assert.equal(upd.error, null)
    assert.deepEqual(upd.data.redirect_uris, ['https://one.example/cb'])
    const bad = await oauth.updateClient(made[0].client_id, { redirect_uris: ['http://not-loopback.example/cb'] })
    assert.equal(bad.error?.code, 'validation_failed')
    const rot = await oauth.regenerateClientSecret(made[0].client_id)
    assert.ok(rot.data.client_secret && rot.data.client_secret !== made[0].client_secret)
    for (const c of made) assert.equal((await oauth.deleteClient(c.client_id)).error, null)
    const gone = await oauth.getClient(made[1].client_id)
    assert.equal(gone.error?.status, 404)
  })

  await t.test('signInAnonymously, then an email and a password make the user permanent', async () => {
    const anon = client(A)
    const off = await anon.signInAnonymously()
    assert.equal(off.error?.code, 'anonymous_provider_disabled')
    const on = await fetch(`${A}/admin/config/auth`, {
      method: 'PATCH',
      headers: { Authorization: `Bearer ${A_KEY}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ external_anonymous_users_enabled: true }),
    })
    assert.equal(on.status, 200)
    const { data, error } = await anon.signInAnonymously({ options: { data: { cart: 2 } } })
    assert.equal(error, null)
    assert.equal(data.user.is_anonymous, true)
    assert.equal(data.user.user_metadata.cart, 2)
    const claims = await anon.getClaims(data.session.access_token)
    assert.equal(claims.data.claims.is_anonymous, true)
    const anonEmail = `anon-${email}`
    const withEmail = await anon.updateUser({ email: anonEmail })
    assert.equal(withEmail.error, null)
    assert.equal(withEmail.data.user.is_anonymous, false)
    assert.equal(withEmail.data.user.email, anonEmail)
    assert.equal((await anon.updateUser({ password })).error, null)
    assert.equal((await client(A).signInWithPassword({ email: anonEmail, password })).error, null)
  })

  await t.test('a session of tenant A is rejected by tenant B', async () => {
    const got = await b.getUser(session.access_token)
    assert.equal(got.data.user, null)
    assert.equal(got.error?.code, 'bad_jwt')
    assert.equal(got.error?.status, 403)
    const refreshed = await b.refreshSession({ refresh_token: session.refresh_token })
    assert.equal(refreshed.data.session, null)
    assert.equal(refreshed.error?.code, 'refresh_token_not_found')
    const signIn = await b.signInWithPassword({ email, password })
    assert.equal(signIn.error?.code, 'invalid_credentials')
  })

  await t.test('closed signups: signUp fails with signup_disabled, /settings says so', async () => {
    const patch = (body) => fetch(`${B}/admin/config/auth`, {
      method: 'PATCH',
      headers: { Authorization: `Bearer ${process.env.KEYSHARD_ADMIN_TOKEN}`, 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    })
    assert.equal((await patch({ disable_signup: true })).status, 200)
    const { data, error } = await client(B).signUp({ email: `closed-${email}`, password })
    assert.equal(data.user, null)
    assert.equal(error?.code, 'signup_disabled')
    const settings = await (await fetch(`${B}/settings`)).json()
    assert.equal(settings.disable_signup, true)
    assert.equal((await patch({ disable_signup: false })).status, 200)
  })

  await t.test('signOut ends the session', async () => {
    const accessToken = session.access_token
    const { error } = await a.signOut()
    assert.equal(error, null)
    // auth-js turns the server's 403 session_not_found into AuthSessionMissingError.
    const got = await client(A).getUser(accessToken)
    assert.equal(got.data.user, null)
    assert.equal(got.error?.name, 'AuthSessionMissingError')
    const refreshed = await client(A).refreshSession({ refresh_token: session.refresh_token })
    assert.equal(refreshed.error?.code, 'refresh_token_not_found')
  })
})
