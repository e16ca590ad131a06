package certs

// OCSPWaiters returns how many Check calls wait for another call's request
// in flight, so that tests can tell when every caller has joined it.
func OCSPWaiters(c *OCSPClient) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, call := range c.calls {
		n += call.waiters
	}
	return n
}

// OCSPCacheLen returns the number of cached responses, expired or not.
func OCSPCacheLen(c *OCSPClient) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.cache)
}
