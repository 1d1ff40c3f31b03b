-- Applies read-model operations atomically: one call per event (the projector) or per
-- batch of snapshot rows (the rebuild); both go through exactly this code, which is why a
-- rebuilt read model equals the incrementally maintained one.
--
-- KEYS     the pointers to the current generation and to the one being built
-- ARGV[1]  'live' (the current generation and the one being built, if any) or a generation
-- ARGV[2]  JSON array of operations {k: kind, id, v: version, once: {...}, set: {...}};
--          every value is a string ('' for null). Or, from the rebuild, rows of one kind
--          by position: {k: kind, once: [names], set: [names], rows: [[id, v, the once
--          values, the set values], ...]}, the same operations without a field name per
--          value (decoding those names was a fifth of a row's time in Redis)
-- ARGV[3]  outbox id to remember as projected ('' for none)
-- ARGV[4]  seconds to remember it; ARGV[5] seconds a closed bid's tombstone is kept
-- ARGV[6]  'bulk' while a rebuild loads a generation: products are then placed in their
--          lists and rankings (and their detail rendered) only by their own operations,
--          which the rebuild loads after every ask, bid and order (once per product instead
--          of once per ask, bid and order)
-- ARGV[7]  the newest trades, ARGV[8] the ask prices a product's detail shows
--
-- Every write is idempotent and monotonic: `once` fields are written only when absent,
-- `set` fields only by an operation whose version is not older than the entity's `_v`,
-- and the indexes (order books, lists, rankings, histories) are recomputed from the
-- entity's resulting state, so duplicates and any delivery order end in the same state.
--
-- An entity new to the generation (most of a rebuild's rows) takes a shorter path to the
-- same state: its fields are the operation's, not read back; it is in no index yet, so
-- nothing is removed from one; and its hash is written once, with what indexing adds.

local batch = cjson.decode(ARGV[2])
local tombstone_ttl = tonumber(ARGV[5])
local bulk = ARGV[6] == 'bulk'
local detail_trades, detail_prices = tonumber(ARGV[7]), tonumber(ARGV[8])

local targets = {}
if ARGV[1] == 'live' then
  local current = redis.call('GET', KEYS[1])
  local building = redis.call('GET', KEYS[2])
  if current then targets[#targets + 1] = current end
  if building and building ~= current then targets[#targets + 1] = building end
else
  targets[1] = ARGV[1]
end

local function pad(text, width)
  return string.rep('0', width - #text) .. text
end

-- A positional batch's shape: the field names by position in a row, where they are, and
-- how many once fields come before the set fields (rows start with the id and version).
local function shape_of(names_once, names_set)
  local names, index = {}, {}
  for i, name in ipairs(names_once) do names[2 + i] = name end
  for i, name in ipairs(names_set) do names[2 + #names_once + i] = name end
  for i, name in pairs(names) do index[name] = i end
  local last_once = 2 + #names_once
  return {names = names, index = index, last_once = last_once, last = last_once + #names_set}
end

-- `write` for an operation given by position (see ARGV[2]): the same writes.
local function write_row(key, op)
  local row, shape = op.row, op.shape
  local names, last_once, last = shape.names, shape.last_once, shape.last
  if redis.call('EXISTS', key) == 0 then
    local args, n = {}, 0
    for i = 3, last_once do
      local value = row[i]
      if value ~= '' then
        args[n + 1], args[n + 2], n = names[i], value, n + 2
      end
    end
    if last > last_once then
      args[n + 1], args[n + 2], n = '_v', op.v, n + 2
      for i = last_once + 1, last do
        args[n + 1], args[n + 2], n = names[i], row[i], n + 2
      end
    end
    return args
  end
  for i = 3, last_once do
    if row[i] ~= '' then redis.call('HSETNX', key, names[i], row[i]) end
  end
  if last == last_once then return end
  local current = tonumber(redis.call('HGET', key, '_v') or '0')
  if tonumber(op.v) < current then return end
  local args = {'_v', op.v}
  for i = last_once + 1, last do
    args[#args + 1] = names[i]
    args[#args + 1] = row[i]
  end
  redis.call('HSET', key, unpack(args))
  return nil
end

-- A `once` field sent as '' is not known yet: it is left for an operation that knows it.
-- Returns, for an entity new to the generation, the HSET arguments of everything it knows
-- (what the general path below ends in), for `flush` to write once indexing has added its
-- own fields; nil for an entity already there (written here).
local function write(key, op)
  if op.row then return write_row(key, op) end
  local set = op.set or {}
  if redis.call('EXISTS', key) == 0 then
    local args = {}
    for name, value in pairs(op.once or {}) do
      if value ~= '' then
        args[#args + 1] = name
        args[#args + 1] = value
      end
    end
    if next(set) ~= nil then
      args[#args + 1] = '_v'
      args[#args + 1] = op.v
      for name, value in pairs(set) do
        args[#args + 1] = name
        args[#args + 1] = value
      end
    end
    return args
  end
  for name, value in pairs(op.once or {}) do
    if value ~= '' then redis.call('HSETNX', key, name, value) end
  end
  if next(set) == nil then return end
  local current = tonumber(redis.call('HGET', key, '_v') or '0')
  if tonumber(op.v) < current then return end
  local args = {'_v', op.v}
  for name, value in pairs(set) do
    args[#args + 1] = name
    args[#args + 1] = value
  end
  redis.call('HSET', key, unpack(args))
  return nil
end

-- Writes a new entity's pending fields (see `write`); later calls do nothing.
local function flush(key, new)
  if new and #new > 0 and not new.written then
    redis.call('HSET', key, unpack(new))
  end
  if new then new.written = true end
end

-- Adds fields to write: to a new entity's pending ones, or at once to one already there.
local function put(key, new, fields)
  if #fields == 0 then return end
  if new and not new.written then
    for _, value in ipairs(fields) do new[#new + 1] = value end
  else
    redis.call('HSET', key, unpack(fields))
  end
end

-- The entity's `names` fields as HMGET gives them (false when absent): read from a new
-- entity's operation instead of the hash it has not been written to yet.
local function known(key, new, op, names)
  if not new then return redis.call('HMGET', key, unpack(names)) end
  local out = {}
  if op.row then
    local row, index, last_once = op.row, op.shape.index, op.shape.last_once
    for i, name in ipairs(names) do
      local at = index[name]
      local value = false
      if at and (at > last_once or row[at] ~= '') then value = row[at] end
      out[i] = value
    end
    return out
  end
  local once, set = op.once or {}, op.set or {}
  for i, name in ipairs(names) do
    local value = once[name]
    if value == '' then value = nil end -- not written, as `write` leaves it
    if value == nil then value = set[name] end
    if value == nil then value = false end
    out[i] = value
  end
  return out
end

-- A product's detail, rendered whenever what it shows changes, so that reading it is one
-- HGET (a hash, as every document is): `json`, [its fields, order count, newest trades
-- ([price, created_at] each), the open asks' ladder ([price, count, earliest expiry as
-- YYYYMMDD] per price, cheapest first)]; and `summary`, its fields alone, which the
-- product lists show (one HGET per product listed, not a product hash and two order
-- books). Deleted when the product is not known; `json` alone is when something else it
-- shows is missing (the query then asks SQL).
local function render_detail(p, product_id)
  local detail = p .. 'detail:' .. product_id
  local h = redis.call(
    'HMGET', p .. 'product:' .. product_id,
    'name', 'brand', 'category', 'face_value', 'like_count', 'created_us'
  )
  if not h[1] or not h[6] then
    redis.call('DEL', detail)
    return
  end
  local summary = {
    product_id, h[1], h[2], h[3], h[4],
    best(p .. 'asks:' .. product_id, false),
    best(p .. 'bids:' .. product_id, true),
    h[5] or '0', h[6],
  }
  local listed = cjson.encode(summary)
  local function unrenderable()
    redis.call('HDEL', detail, 'json')
    redis.call('HSET', detail, 'summary', listed)
  end
  local trades = {}
  local trades_key = p .. 'trades:' .. product_id
  for _, order_id in ipairs(redis.call('ZREVRANGE', trades_key, 0, detail_trades - 1)) do
    local t = redis.call('HMGET', p .. 'order:' .. order_id, 'price', 'created_at')
    if not t[1] then return unrenderable() end
    trades[#trades + 1] = t
  end
  local ladder = {}
  local prices = redis.call('ZRANGE', p .. 'ladder:' .. product_id, 0, detail_prices - 1)
  for _, price in ipairs(prices) do
    local at_price = p .. 'ladder:' .. price .. ':' .. product_id
    local earliest = redis.call('ZRANGE', at_price, 0, 0, 'WITHSCORES')
    if #earliest == 0 then return unrenderable() end
    ladder[#ladder + 1] = {price, redis.call('ZCARD', at_price), earliest[2]}
  end
  local rendered = cjson.encode({summary, redis.call('ZCARD', trades_key), trades, ladder})
  redis.call('HSET', detail, 'json', rendered, 'summary', listed)
end

-- The product's place in every list and ranking, recomputed from its state, and its
-- detail rendered.
local PRODUCT_FIELDS = {'category', 'created_us', 'like_count', '_mp', '_ml', '_mx'}
local SORTS, SORT_FIELDS = {'popular', 'latest', 'price'}, {'_mp', '_ml', '_mx'}

local function index_product(p, product_id, new, op)
  local key = p .. 'product:' .. product_id
  local h = known(key, new, op, PRODUCT_FIELDS)
  local category, created = h[1], h[2]
  if not category or not created then return end -- not registered (yet)
  local likes = tonumber(h[3] or '0')
  local ask = redis.call('ZRANGE', p .. 'asks:' .. product_id, 0, 0, 'WITHSCORES')
  local by_price = '1' .. product_id
  if #ask > 0 then by_price = '0' .. pad(ask[2], 19) .. product_id end
  local members = {
    pad(tostring(2147483647 - likes), 10) .. product_id,
    pad(created, 18) .. product_id,
    by_price,
  }
  local sorts, names = SORTS, SORT_FIELDS
  local moved = {}
  for i = 1, 3 do
    local old = h[3 + i]
    if old ~= members[i] then
      local all = p .. 'list:' .. sorts[i] .. ':*'
      local of_category = p .. 'list:' .. sorts[i] .. ':c:' .. category
      if old then
        redis.call('ZREM', all, old)
        redis.call('ZREM', of_category, old)
      end
      redis.call('ZADD', all, 0, members[i])
      redis.call('ZADD', of_category, 0, members[i])
      moved[#moved + 1] = names[i]
      moved[#moved + 1] = members[i]
    end
  end
  put(key, new, moved)
  if likes > 0 then
    redis.call('ZADD', p .. 'rank:likes', -likes, product_id)
  elseif not new then
    redis.call('ZREM', p .. 'rank:likes', product_id)
  end
  local trades = redis.call('ZCARD', p .. 'trades:' .. product_id)
  if trades > 0 then
    redis.call('ZADD', p .. 'rank:orders', -trades, product_id)
  end
  flush(key, new)
  render_detail(p, product_id)
end

-- The score of an ask in its price's ladder set: its voucher's last valid day as YYYYMMDD
-- (NO_EXPIRY when unknown: an ask from before vouchers), so the first member is the
-- earliest expiry at that price.
local NO_EXPIRY = '99999999'

-- An open ask in the product's price ladder: `ladder:<product>` holds the prices that have
-- open asks, `ladder:<price>:<product>` the open asks at one price by expiry.
local function place_in_ladder(p, product_id, price, id, expires_on, open, new)
  local at_price = p .. 'ladder:' .. price .. ':' .. product_id
  local prices = p .. 'ladder:' .. product_id
  if open then
    local score = NO_EXPIRY
    if expires_on then score = string.gsub(expires_on, '-', '') end
    redis.call('ZADD', at_price, score, id)
    redis.call('ZADD', prices, price, price)
  elseif not new and redis.call('ZREM', at_price, id) == 1
      and redis.call('EXISTS', at_price) == 0 then
    redis.call('ZREM', prices, price)
  end
end

-- An ask ('ask') or a buy bid ('bid'): in its product's book and its owner's history while
-- open; a tombstone for a while once closed, so a late 'placed' cannot reopen it. An
-- EXPIRED ask stays in its seller's history (done), so it is kept.
local BID_FIELDS = {'product_id', 'owner_id', 'price', 'status', 'created_us', 'expires_on'}

local function index_bid(p, kind, key, id, new, op)
  local h = known(key, new, op, BID_FIELDS)
  local product_id, owner, price, status, created = h[1], h[2], h[3], h[4], h[5]
  if not product_id or not status then return end
  local side = 'buy'
  if kind == 'ask' then side = 'sell' end
  local book = p .. kind .. 's:' .. product_id
  local history, expired = nil, nil
  if owner and created then
    history = p .. 'hist:' .. side .. ':bidding:' .. owner
    expired = p .. 'hist:' .. side .. ':expired:' .. owner
  end
  local open = status == 'OPEN'
  if open then
    redis.call('ZADD', book, price, id)
    if history then redis.call('ZADD', history, 0, pad(created, 18) .. id) end
  else
    if not new then -- a new entity is in no index yet
      redis.call('ZREM', book, id)
      if history then redis.call('ZREM', history, pad(created, 18) .. id) end
    end
    if status == 'EXPIRED' then
      if expired then redis.call('ZADD', expired, 0, pad(created, 18) .. id) end
    else
      flush(key, new)
      redis.call('EXPIRE', key, tombstone_ttl)
    end
  end
  flush(key, new)
  if kind == 'ask' then
    place_in_ladder(p, product_id, price, id, h[6], open, new)
    if not bulk then index_product(p, product_id) end
  elseif not bulk then
    render_detail(p, product_id) -- its highest bid
  end
end

local BUYER_STATE = {
  INSPECTING = 'in_progress', PAID = 'in_progress', DISPUTED = 'in_progress',
  COMPLETED = 'done', SETTLED = 'done', REFUNDED = 'done',
}
local SELLER_STATE = {
  INSPECTING = 'in_progress', PAID = 'in_progress', DISPUTED = 'in_progress',
  COMPLETED = 'in_progress', SETTLED = 'done', REFUNDED = 'done',
}

-- Moves the order's member to the history of its `state`; returns the state when it moved.
local function place_in_history(p, member, owner, side, state, old)
  if old == state then return nil end
  local base = p .. 'hist:' .. side .. ':'
  if old then redis.call('ZREM', base .. old .. ':' .. owner, member) end
  redis.call('ZADD', base .. state .. ':' .. owner, 0, member)
  return state
end

-- The admins' queues, oldest first: orders waiting for inspection (since they were placed)
-- and open disputes (since they were opened). A new order is in neither yet.
local function place_in_queue(p, name, member, waiting, new)
  if not member then return end
  if waiting then
    redis.call('ZADD', p .. 'queue:' .. name, 0, member)
  elseif not new then
    redis.call('ZREM', p .. 'queue:' .. name, member)
  end
end

-- The fields each kind's indexing reads (`known`), built once rather than per row.
local ORDER_FIELDS = {
  'product_id', 'buyer_id', 'seller_id', 'status', 'created_us', '_hb', '_hs',
  'dispute_opened_us',
}
local COUPON_FIELDS = {'user_id', 'created_us'}
local SETTLEMENT_FIELDS = {'seller_id', 'business_date'}
local IMAGE_FIELDS = {'status'}

local function index_order(p, key, id, new, op)
  local h = known(key, new, op, ORDER_FIELDS)
  local product_id, buyer, seller, status, created = h[1], h[2], h[3], h[4], h[5]
  if not product_id or not buyer or not seller or not status or not created then return end
  local member = pad(created, 18) .. id
  place_in_queue(p, 'inspections', member, status == 'INSPECTING', new)
  if h[8] then
    place_in_queue(p, 'disputes', pad(h[8], 18) .. id, status == 'DISPUTED', new)
  end
  redis.call('ZADD', p .. 'trades:' .. product_id, created, id)
  local moved = {}
  local bought = place_in_history(p, member, buyer, 'buy', BUYER_STATE[status], h[6])
  if bought then moved[#moved + 1] = '_hb'; moved[#moved + 1] = bought end
  local sold = place_in_history(p, member, seller, 'sell', SELLER_STATE[status], h[7])
  if sold then moved[#moved + 1] = '_hs'; moved[#moved + 1] = sold end
  put(key, new, moved)
  flush(key, new) -- the product's detail reads the order's price
  if not bulk then index_product(p, product_id) end
end

local function index_coupon(p, key, id, new, op)
  local h = known(key, new, op, COUPON_FIELDS)
  if h[1] and h[2] then
    redis.call('ZADD', p .. 'coupons:' .. h[1], 0, pad(h[2], 18) .. id)
  end
end

local function index_settlement(p, key, id, new, op)
  local h = known(key, new, op, SETTLEMENT_FIELDS)
  if h[1] and h[2] then
    redis.call('ZADD', p .. 'settlements:' .. h[1], 0, h[2] .. id)
  end
end

local function apply(p, op)
  local kind, id = op.k, op.id
  if kind == 'image' then
    -- An image's S3 key is derived from its order (its seller's upload): only a deleted
    -- image is written, as a tombstone kept as long as a closed bid's. No order's image is
    -- ever deleted (the cleanup keeps what orders use), so nothing needs it for longer.
    if known(nil, true, op, IMAGE_FIELDS)[1] == 'DELETED' then
      local key = p .. 'image:' .. id
      redis.call('HSET', key, 'status', 'DELETED')
      redis.call('EXPIRE', key, tombstone_ttl)
    end
  else
    local key = p .. kind .. ':' .. id
    local new = write(key, op)
    if kind == 'product' then
      index_product(p, id, new, op)
    elseif kind == 'ask' or kind == 'bid' then
      index_bid(p, kind, key, id, new, op)
    elseif kind == 'order' then
      index_order(p, key, id, new, op)
    elseif kind == 'coupon' then
      index_coupon(p, key, id, new, op)
    elseif kind == 'settlement' then
      index_settlement(p, key, id, new, op)
    end
    flush(key, new)
  end
end

for _, generation in ipairs(targets) do
  local p = 'rm:' .. generation .. ':'
  if batch.rows then
    local op = {k = batch.k, shape = shape_of(batch.once, batch.set)}
    for _, row in ipairs(batch.rows) do
      op.id, op.v, op.row = row[1], row[2], row
      apply(p, op)
    end
  else
    for _, op in ipairs(batch) do apply(p, op) end
  end
end

if ARGV[3] ~= '' then
  redis.call('SET', 'rm:seen:' .. ARGV[3], 1, 'EX', tonumber(ARGV[4]))
end
return #targets
