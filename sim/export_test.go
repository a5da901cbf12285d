package sim

// Chosen is chosen, for the tests.
var Chosen = chosen
